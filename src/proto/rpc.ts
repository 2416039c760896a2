/**
 * Typed ttrpc over generated protobuf services: `serviceHandlers` turns an
 * implementation into ttrpc handlers, `serviceClient` gives a typed client.
 * Decoding uses @bufbuild/protobuf's validating binary reader: a malformed
 * message is an invalid_argument error for that call only.
 */
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import { HullError } from '../errors/index.js';
import type { CallContext, CallOptions, ServiceMethods, TtrpcClient } from '../ttrpc/index.js';

type Input<M> = M extends { input: infer I extends DescMessage } ? I : never;
type Output<M> = M extends { output: infer O extends DescMessage } ? O : never;

export type ServiceImpl<S extends GenServiceMethods> = {
  [K in keyof S]: (request: MessageShape<Input<S[K]>>, ctx: CallContext) => Promise<MessageInitShape<Output<S[K]>>>;
};

export type ServiceClient<S extends GenServiceMethods> = {
  [K in keyof S]: (request: MessageInitShape<Input<S[K]>>, options?: CallOptions) => Promise<MessageShape<Output<S[K]>>>;
};

export function decode<D extends DescMessage>(schema: D, bytes: Uint8Array, what: string): MessageShape<D> {
  try {
    return fromBinary(schema, bytes);
  } catch (e) {
    throw new HullError('invalid_argument', `Cannot decode ${what} (${schema.typeName}): ${(e as Error).message}`);
  }
}

/** serviceHandlers maps each RPC of `service` (by its proto name) to the implementation. */
export function serviceHandlers<S extends GenServiceMethods>(service: GenService<S>, impl: ServiceImpl<S>): ServiceMethods {
  const handlers: Record<string, ServiceMethods[string]> = {};
  for (const method of service.methods) {
    const fn = impl[method.localName as keyof S] as unknown as (req: unknown, ctx: CallContext) => Promise<MessageInitShape<DescMessage>>;
    handlers[method.name] = async (payload, ctx) => {
      const request = decode(method.input, payload, `${method.name} request`);
      const response = await fn.call(impl, request, ctx);
      return toBinary(method.output, create(method.output, response));
    };
  }
  return handlers;
}

/** serviceClient returns a typed client calling `service` through a ttrpc client. */
export function serviceClient<S extends GenServiceMethods>(service: GenService<S>, client: TtrpcClient): ServiceClient<S> {
  const out: Record<string, unknown> = {};
  for (const method of service.methods) {
    out[method.localName] = async (request: MessageInitShape<DescMessage>, options?: CallOptions) => {
      const payload = await client.call(service.typeName, method.name, toBinary(method.input, create(method.input, request)), options);
      return decode(method.output, payload, `${method.name} response`);
    };
  }
  return out as ServiceClient<S>;
}
