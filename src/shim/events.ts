/**
 * EventPublisher forwards task events to containerd's ttrpc Events service
 * at $TTRPC_ADDRESS, in order, retrying a failed forward (reconnecting on a
 * closed connection) a few times with growing backoff, as containerd's own
 * shim library does. Events carry bare type URLs: containerd's typeurl does
 * not understand the type.googleapis.com/ prefix.
 */
import { create, toBinary, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { setTimeout as sleep } from 'node:timers/promises';
import { TtrpcClient } from '../ttrpc/index.js';
import { ForwardRequestSchema } from '../proto/gen/events_service_pb.js';

const EVENTS_SERVICE = 'containerd.services.events.ttrpc.v1.Events';
const MAX_QUEUE = 2048;
const MAX_TRIES = 5;

interface QueuedEvent {
  topic: string;
  typeUrl: string;
  value: Uint8Array;
}

export class EventPublisher {
  readonly #address: string;
  readonly #namespace: string;
  readonly #log: (line: string) => void;
  // Events waiting to be forwarded, oldest first; drained by #drain() only.
  readonly #queue: QueuedEvent[] = [];
  #client: TtrpcClient | undefined;
  #draining: Promise<void> | undefined;

  constructor(ttrpcAddress: string, namespace: string, log: (line: string) => void) {
    this.#address = ttrpcAddress.replace(/^unix:\/\//, '');
    this.#namespace = namespace;
    this.#log = log;
  }

  publish<D extends DescMessage>(topic: string, schema: D, event: MessageInitShape<D>): void {
    if (!this.#address) return;
    if (this.#queue.length >= MAX_QUEUE) {
      this.#log(`event queue full, dropping ${topic}`);
      return;
    }
    this.#queue.push({ topic, typeUrl: schema.typeName, value: toBinary(schema, create(schema, event)) });
    this.#draining ??= this.#drain().finally(() => (this.#draining = undefined));
  }

  /** flush waits until every queued event was forwarded or given up on. */
  async flush(): Promise<void> {
    while (this.#draining) await this.#draining;
  }

  close(): void {
    this.#client?.close();
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const event = this.#queue[0]!;
      for (let attempt = 1; ; attempt++) {
        try {
          await this.#forward(event);
          break;
        } catch (e) {
          this.#client?.close();
          this.#client = undefined;
          if (attempt >= MAX_TRIES) {
            this.#log(`cannot forward ${event.topic}: ${(e as Error).message}`);
            break;
          }
          await sleep(attempt * 200);
        }
      }
      this.#queue.shift();
    }
  }

  async #forward(event: QueuedEvent): Promise<void> {
    this.#client ??= await TtrpcClient.connect(this.#address);
    const request = create(ForwardRequestSchema, {
      envelope: { timestamp: timestampNow(), namespace: this.#namespace, topic: event.topic, event: { typeUrl: event.typeUrl, value: event.value } },
    });
    await this.#client.call(EVENTS_SERVICE, 'Forward', toBinary(ForwardRequestSchema, request), { timeoutMs: 5000 });
  }
}
