/**
 * messages — the protobuf messages inside ttrpc frames (containerd/ttrpc v1.1.1 `types.go`,
 * package `ttrpc`), written by hand because there are only four:
 *
 *   Request  { string service = 1; string method = 2; bytes payload = 3; int64 timeout_nano = 4;
 *              repeated KeyValue metadata = 5; }
 *   KeyValue { string key = 1; string value = 2; }
 *   Response { google.rpc.Status status = 1; bytes payload = 2; }
 *   google.rpc.Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
 *
 * Encoding follows proto3 (fields at their default value are left out), which makes our bytes equal to
 * Go's. Decoding accepts what proto3 allows (unknown fields skipped, repeated scalars last-wins) and
 * rejects everything else with HullError('invalid_argument'): the guest on the other end may be hostile,
 * so no input may crash the reader. Strings must be valid UTF-8.
 */

import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { HullError } from '../errors/index.js';
import { STATUS_OK } from '../errors/grpc-status.js';

export interface KeyValue {
  key: string;
  value: string;
}

export interface TtrpcRequest {
  service: string;
  method: string;
  payload: Uint8Array;
  /** timeoutNano is the caller's remaining deadline in nanoseconds; 0 means none. */
  timeoutNano: bigint;
  metadata: KeyValue[];
}

/** AnyMessage is google.protobuf.Any: a type URL and the message bytes. */
export interface AnyMessage {
  typeUrl: string;
  value: Uint8Array;
}

/** RpcStatus is google.rpc.Status. */
export interface RpcStatus {
  code: number;
  message: string;
  details: AnyMessage[];
}

export interface TtrpcResponse {
  /** status is absent (or code 0) for success. */
  status?: RpcStatus;
  payload: Uint8Array;
}

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const emptyBytes = new Uint8Array(0);

export function encodeRequest(request: TtrpcRequest): Uint8Array {
  const writer = new BinaryWriter();
  if (request.service !== '') writer.tag(1, WireType.LengthDelimited).string(request.service);
  if (request.method !== '') writer.tag(2, WireType.LengthDelimited).string(request.method);
  if (request.payload.length > 0) writer.tag(3, WireType.LengthDelimited).bytes(request.payload);
  if (request.timeoutNano !== 0n) {
    if (request.timeoutNano < INT64_MIN || request.timeoutNano > INT64_MAX) {
      throw new HullError('invalid_argument', `ttrpc: timeout_nano out of int64 range: ${request.timeoutNano}`);
    }
    writer.tag(4, WireType.Varint).int64(request.timeoutNano);
  }
  for (const { key, value } of request.metadata) {
    writer.tag(5, WireType.LengthDelimited).fork();
    if (key !== '') writer.tag(1, WireType.LengthDelimited).string(key);
    if (value !== '') writer.tag(2, WireType.LengthDelimited).string(value);
    writer.join();
  }
  return writer.finish();
}

export function decodeRequest(bytes: Uint8Array): TtrpcRequest {
  return decoding('Request', () => {
    const request: TtrpcRequest = { service: '', method: '', payload: emptyBytes, timeoutNano: 0n, metadata: [] };
    readFields(new BinaryReader(bytes), (reader, field, wireType) => {
      switch (field) {
        case 1:
          request.service = readString(reader, wireType, 'service');
          return true;
        case 2:
          request.method = readString(reader, wireType, 'method');
          return true;
        case 3:
          request.payload = readBytes(reader, wireType, 'payload');
          return true;
        case 4:
          expectWireType(wireType, WireType.Varint, 'timeout_nano');
          request.timeoutNano = BigInt(reader.int64());
          return true;
        case 5:
          request.metadata.push(decodeKeyValue(readBytes(reader, wireType, 'metadata')));
          return true;
        default:
          return false;
      }
    });
    return request;
  });
}

function decodeKeyValue(bytes: Uint8Array): KeyValue {
  const keyValue: KeyValue = { key: '', value: '' };
  readFields(new BinaryReader(bytes), (reader, field, wireType) => {
    if (field === 1) keyValue.key = readString(reader, wireType, 'metadata.key');
    else if (field === 2) keyValue.value = readString(reader, wireType, 'metadata.value');
    else return false;
    return true;
  });
  return keyValue;
}

export function encodeResponse(response: TtrpcResponse): Uint8Array {
  const writer = new BinaryWriter();
  // An OK status is left out entirely, as containerd-compatible peers do; absent means OK.
  if (response.status !== undefined && response.status.code !== STATUS_OK) {
    writer.tag(1, WireType.LengthDelimited).bytes(encodeStatus(response.status));
  }
  if (response.payload.length > 0) writer.tag(2, WireType.LengthDelimited).bytes(response.payload);
  return writer.finish();
}

export function decodeResponse(bytes: Uint8Array): TtrpcResponse {
  return decoding('Response', () => {
    const response: TtrpcResponse = { payload: emptyBytes };
    readFields(new BinaryReader(bytes), (reader, field, wireType) => {
      if (field === 1) response.status = decodeStatus(readBytes(reader, wireType, 'status'));
      else if (field === 2) response.payload = readBytes(reader, wireType, 'payload');
      else return false;
      return true;
    });
    return response;
  });
}

export function encodeStatus(status: RpcStatus): Uint8Array {
  const writer = new BinaryWriter();
  if (status.code !== 0) writer.tag(1, WireType.Varint).int32(status.code);
  if (status.message !== '') writer.tag(2, WireType.LengthDelimited).string(status.message);
  for (const detail of status.details) {
    writer.tag(3, WireType.LengthDelimited).fork();
    if (detail.typeUrl !== '') writer.tag(1, WireType.LengthDelimited).string(detail.typeUrl);
    if (detail.value.length > 0) writer.tag(2, WireType.LengthDelimited).bytes(detail.value);
    writer.join();
  }
  return writer.finish();
}

export function decodeStatus(bytes: Uint8Array): RpcStatus {
  return decoding('Status', () => {
    const status: RpcStatus = { code: 0, message: '', details: [] };
    readFields(new BinaryReader(bytes), (reader, field, wireType) => {
      switch (field) {
        case 1:
          expectWireType(wireType, WireType.Varint, 'status.code');
          status.code = reader.int32();
          return true;
        case 2:
          status.message = readString(reader, wireType, 'status.message');
          return true;
        case 3:
          status.details.push(decodeAny(readBytes(reader, wireType, 'status.details')));
          return true;
        default:
          return false;
      }
    });
    return status;
  });
}

function decodeAny(bytes: Uint8Array): AnyMessage {
  const any: AnyMessage = { typeUrl: '', value: emptyBytes };
  readFields(new BinaryReader(bytes), (reader, field, wireType) => {
    if (field === 1) any.typeUrl = readString(reader, wireType, 'type_url');
    else if (field === 2) any.value = readBytes(reader, wireType, 'value');
    else return false;
    return true;
  });
  return any;
}

/**
 * readFields walks every field of a message; `readKnown` reads a field it knows and returns true, or
 * returns false to have the field skipped as unknown.
 */
function readFields(
  reader: BinaryReader,
  readKnown: (reader: BinaryReader, field: number, wireType: WireType) => boolean,
): void {
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (!readKnown(reader, field, wireType)) {
      if (wireType === WireType.EndGroup) throw new Error(`unexpected end-group tag for field ${field}`);
      reader.skip(wireType, field);
    }
  }
}

function expectWireType(actual: WireType, expected: WireType, fieldName: string): void {
  if (actual !== expected) {
    throw new Error(`field ${fieldName}: wire type ${actual}, want ${expected}`);
  }
}

function readBytes(reader: BinaryReader, wireType: WireType, fieldName: string): Uint8Array {
  expectWireType(wireType, WireType.LengthDelimited, fieldName);
  return reader.bytes();
}

function readString(reader: BinaryReader, wireType: WireType, fieldName: string): string {
  expectWireType(wireType, WireType.LengthDelimited, fieldName);
  return reader.string(true);
}

/** decoding runs a decoder and turns anything it throws into one HullError('invalid_argument'). */
function decoding<T>(messageName: string, decode: () => T): T {
  try {
    return decode();
  } catch (cause) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    throw new HullError('invalid_argument', `ttrpc: cannot decode ${messageName}: ${detail}`, { cause });
  }
}
