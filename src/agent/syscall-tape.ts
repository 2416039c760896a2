/**
 * The syscall tape: a tiny static x86-64 program (built here, byte by byte: the guest has no
 * compiler and any dynamically linked helper costs ~30 ms of loading under TCG) that runs a list of
 * system calls the agent prepared. It reads the tape from fd 3 until end of file, then runs its ops:
 *
 *   syscall  nr, six arguments (each a value or, by the op's mask, the address of a u64 to load),
 *            the result stored at an address if asked; a result in -4095..-1 jumps to the op's
 *            failure target (if any) with [op index, errno] at ERROR_RECORD
 *   ifZero   jump to a target when the last syscall returned 0 (fork's child)
 *   jump     jump to a target
 *
 * and exits 0 past the last op. Everything else (what to call, with which buffers) is the tape's:
 * the program holds no policy. It is not PIE and loads at a fixed address, so the agent knows where
 * the tape lands and writes absolute pointers into it.
 */

/** LOAD_ADDRESS is where the program's only segment loads (file and zero-filled memory). */
const LOAD_ADDRESS = 0x400000;
const MEMORY_SIZE = 0x200000;
/** ERROR_RECORD receives [op index, errno] when a syscall with a failure target fails. */
export const ERROR_RECORD = LOAD_ADDRESS + 0x100000;
/** TAPE_ADDRESS is where the tape is read to. */
export const TAPE_ADDRESS = LOAD_ADDRESS + 0x101000;
export const MAX_TAPE_BYTES = LOAD_ADDRESS + MEMORY_SIZE - TAPE_ADDRESS;
const OP_WORDS = 11;
const NO_TARGET = -1n;

// Registers by number (x86-64 encoding).
const RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSI = 6, RDI = 7, R8 = 8, R9 = 9, R10 = 10, R12 = 12, R13 = 13, R14 = 14, R15 = 15;

/** Assembler knows the few instruction forms the program uses; jumps are rel32 to labels. */
class Assembler {
  readonly bytes: number[] = [];
  readonly #labels = new Map<string, number>();
  readonly #fixups: Array<{ at: number; label: string }> = [];

  label(name: string): void {
    this.#labels.set(name, this.bytes.length);
  }
  #rex(reg: number, rm: number): void {
    this.bytes.push(0x48 | ((reg >> 3) << 2) | (rm >> 3));
  }
  #modrmReg(reg: number, rm: number): void {
    this.bytes.push(0xc0 | ((reg & 7) << 3) | (rm & 7));
  }
  #modrmDisp(reg: number, base: number, disp: number): void {
    this.bytes.push(0x80 | ((reg & 7) << 3) | (base & 7));
    if ((base & 7) === 4) this.bytes.push(0x24); // SIB: base alone (rsp, r12)
    this.#u32(disp);
  }
  #u32(v: number): void {
    for (let i = 0; i < 4; i++) this.bytes.push((v >>> (8 * i)) & 0xff);
  }
  movImm(reg: number, value: bigint): void {
    this.bytes.push(0x48 | (reg >> 3), 0xb8 + (reg & 7));
    const v = BigInt.asUintN(64, value);
    for (let i = 0n; i < 8n; i++) this.bytes.push(Number((v >> (8n * i)) & 0xffn));
  }
  load(reg: number, base: number, disp = 0): void {
    this.#rex(reg, base);
    this.bytes.push(0x8b);
    this.#modrmDisp(reg, base, disp);
  }
  store(base: number, disp: number, reg: number): void {
    this.#rex(reg, base);
    this.bytes.push(0x89);
    this.#modrmDisp(reg, base, disp);
  }
  /** op dst, src for add (0x01), sub (0x29), cmp (0x39), test (0x85), mov (0x89). */
  regReg(opcode: number, dst: number, src: number): void {
    this.#rex(src, dst);
    this.bytes.push(opcode);
    this.#modrmReg(src, dst);
  }
  testImm(reg: number, imm: number): void {
    this.#rex(0, reg);
    this.bytes.push(0xf7);
    this.#modrmReg(0, reg);
    this.#u32(imm);
  }
  imulImm(dst: number, src: number, imm: number): void {
    this.#rex(dst, src);
    this.bytes.push(0x69);
    this.#modrmReg(dst, src);
    this.#u32(imm);
  }
  inc(reg: number): void {
    this.#rex(0, reg);
    this.bytes.push(0xff);
    this.#modrmReg(0, reg);
  }
  neg(reg: number): void {
    this.#rex(3, reg);
    this.bytes.push(0xf7);
    this.#modrmReg(3, reg);
  }
  syscall(): void {
    this.bytes.push(0x0f, 0x05);
  }
  /** jump: 'jmp' or a condition (e, ne, le, ae, b). */
  jump(condition: 'jmp' | 'e' | 'ne' | 'le' | 'ae' | 'b', label: string): void {
    const cc = { e: 0x84, ne: 0x85, le: 0x8e, ae: 0x83, b: 0x82 } as const;
    if (condition === 'jmp') this.bytes.push(0xe9);
    else this.bytes.push(0x0f, cc[condition]);
    this.#fixups.push({ at: this.bytes.length, label });
    this.#u32(0);
  }
  finish(): Uint8Array {
    for (const { at, label } of this.#fixups) {
      const target = this.#labels.get(label);
      if (target === undefined) throw new Error(`syscall tape: no label ${label}`);
      const rel = target - (at + 4);
      for (let i = 0; i < 4; i++) this.bytes[at + i] = (rel >>> (8 * i)) & 0xff;
    }
    return Uint8Array.from(this.bytes);
  }
}

/** field is the displacement of word `k` of the op at r12 (r12 = tape + 88 × index; word 0 is the op count). */
const field = (k: number): number => 8 + 8 * k;

function program(): Uint8Array {
  const a = new Assembler();
  // Read the tape: r13 counts the bytes read.
  a.movImm(R13, 0n);
  a.label('read');
  a.movImm(RAX, 0n); // read
  a.movImm(RDI, 3n);
  a.movImm(RSI, BigInt(TAPE_ADDRESS));
  a.regReg(0x01, RSI, R13);
  a.movImm(RDX, BigInt(MAX_TAPE_BYTES));
  a.regReg(0x29, RDX, R13);
  a.syscall();
  a.regReg(0x85, RAX, RAX);
  a.jump('le', 'run');
  a.regReg(0x01, R13, RAX);
  a.jump('jmp', 'read');
  // Run: r15 = tape, r13 = op index, r14 = last result, r12 = current op.
  a.label('run');
  a.movImm(R15, BigInt(TAPE_ADDRESS));
  a.movImm(R13, 0n);
  a.movImm(R14, 0n);
  a.label('loop');
  a.load(RAX, R15, 0);
  a.regReg(0x39, R13, RAX);
  a.jump('ae', 'finish');
  a.imulImm(R12, R13, OP_WORDS * 8);
  a.regReg(0x01, R12, R15);
  a.load(RAX, R12, field(0));
  a.regReg(0x85, RAX, RAX);
  a.jump('e', 'syscall');
  a.movImm(RCX, 1n);
  a.regReg(0x39, RAX, RCX);
  a.jump('e', 'ifZero');
  a.load(R13, R12, field(1)); // jump
  a.jump('jmp', 'loop');
  a.label('ifZero');
  a.regReg(0x85, R14, R14);
  a.jump('ne', 'next');
  a.load(R13, R12, field(1));
  a.jump('jmp', 'loop');
  a.label('next');
  a.inc(R13);
  a.jump('jmp', 'loop');
  a.label('syscall');
  a.load(RBX, R12, field(8)); // mask
  const args = [RDI, RSI, RDX, R10, R8, R9];
  args.forEach((reg, i) => {
    a.load(reg, R12, field(2 + i));
    a.testImm(RBX, 1 << i);
    a.jump('e', `arg${i}`);
    a.load(reg, reg, 0);
    a.label(`arg${i}`);
  });
  a.load(RAX, R12, field(1));
  a.syscall();
  a.regReg(0x89, R14, RAX);
  a.testImm(RBX, 0x100);
  a.jump('e', 'stored');
  a.load(RCX, R12, field(9));
  a.store(RCX, 0, RAX);
  a.label('stored');
  a.movImm(RCX, -4095n);
  a.regReg(0x39, RAX, RCX);
  a.jump('b', 'next');
  a.load(RCX, R12, field(10));
  a.movImm(RDX, NO_TARGET);
  a.regReg(0x39, RCX, RDX);
  a.jump('e', 'next');
  a.movImm(RDX, BigInt(ERROR_RECORD));
  a.store(RDX, 0, R13);
  a.neg(RAX);
  a.store(RDX, 8, RAX);
  a.regReg(0x89, R13, RCX);
  a.jump('jmp', 'loop');
  a.label('finish');
  a.movImm(RAX, 231n); // exit_group(0)
  a.movImm(RDI, 0n);
  a.syscall();
  return a.finish();
}

/** syscallTapeElf is the program as a static ELF executable. */
export function syscallTapeElf(): Buffer {
  const code = program();
  const headers = 64 + 56;
  const elf = Buffer.alloc(headers + code.length);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0); // ELF64, little-endian, version 1, System V
  elf.writeUInt16LE(2, 16); // ET_EXEC
  elf.writeUInt16LE(0x3e, 18); // x86-64
  elf.writeUInt32LE(1, 20);
  elf.writeBigUInt64LE(BigInt(LOAD_ADDRESS + headers), 24); // entry
  elf.writeBigUInt64LE(64n, 32); // program headers
  elf.writeUInt16LE(64, 52);
  elf.writeUInt16LE(56, 54);
  elf.writeUInt16LE(1, 56);
  elf.writeUInt16LE(64, 58);
  // PT_LOAD, read + write + execute, the whole file at LOAD_ADDRESS, zero-filled up to MEMORY_SIZE.
  elf.writeUInt32LE(1, 64);
  elf.writeUInt32LE(7, 68);
  elf.writeBigUInt64LE(0n, 72);
  elf.writeBigUInt64LE(BigInt(LOAD_ADDRESS), 80);
  elf.writeBigUInt64LE(BigInt(LOAD_ADDRESS), 88);
  elf.writeBigUInt64LE(BigInt(elf.length), 96);
  elf.writeBigUInt64LE(BigInt(MEMORY_SIZE), 104);
  elf.writeBigUInt64LE(0x1000n, 112);
  elf.set(code, headers);
  return elf;
}

/** An argument: a value, or `{ load }`: the u64 at an address (a slot an earlier op stored to). */
export type TapeArg = bigint | number | Ref | { load: Ref };

/** Ref is an address in the tape's data, known once the tape is built. */
export interface Ref {
  readonly offset: number;
}

interface Op {
  kind: 0 | 1 | 2;
  nr: number;
  args: TapeArg[];
  store?: Ref;
  fail?: string;
  target?: string;
}

/** Tape builds a tape: data (strings, buffers, slots) and ops, with labels for jumps. */
export class Tape {
  readonly #ops: Op[] = [];
  readonly #labels = new Map<string, number>();
  readonly #data: Buffer[] = [];
  #dataSize = 0;

  /** bytes places `data` (8-byte aligned) and returns its address. */
  bytes(data: Uint8Array): Ref {
    const ref = { offset: this.#dataSize };
    const padded = Buffer.alloc(Math.ceil(data.length / 8) * 8 || 8);
    padded.set(data);
    this.#data.push(padded);
    this.#dataSize += padded.length;
    return ref;
  }
  string(s: string): Ref {
    return this.bytes(Buffer.from(`${s}\0`));
  }
  /** words places u64 words (values or addresses). */
  words(values: Array<bigint | Ref>): Ref {
    const ref = { offset: this.#dataSize };
    this.#data.push(Buffer.alloc(8 * values.length));
    this.#dataSize += 8 * values.length;
    this.#pointerWords.push({ at: ref.offset, values });
    return ref;
  }
  readonly #pointerWords: Array<{ at: number; values: Array<bigint | Ref> }> = [];

  /** pointerArray places a NULL-terminated array of pointers to the strings (argv, envp). */
  pointerArray(strings: string[]): Ref {
    return this.words([...strings.map((s) => this.string(s)), 0n]);
  }
  at(ref: Ref, add: number): Ref {
    return { offset: ref.offset + add };
  }
  label(name: string): void {
    this.#labels.set(name, this.#ops.length);
  }
  syscall(nr: number, args: TapeArg[], opts: { store?: Ref; fail?: string } = {}): number {
    this.#ops.push({ kind: 0, nr, args, ...opts });
    return this.#ops.length - 1;
  }
  ifZero(target: string): void {
    this.#ops.push({ kind: 1, nr: 0, args: [], target });
  }
  jump(target: string): void {
    this.#ops.push({ kind: 2, nr: 0, args: [], target });
  }

  /** build returns the tape as the program reads it. */
  build(): Buffer {
    const dataAddress = TAPE_ADDRESS + 8 + OP_WORDS * 8 * this.#ops.length;
    const address = (r: Ref): bigint => BigInt(dataAddress + r.offset);
    const labelIndex = (name: string): bigint => {
      const i = this.#labels.get(name);
      if (i === undefined) throw new Error(`tape: no label ${name}`);
      return BigInt(i);
    };
    const out = Buffer.alloc(8 + OP_WORDS * 8 * this.#ops.length + this.#dataSize);
    out.writeBigUInt64LE(BigInt(this.#ops.length), 0);
    this.#ops.forEach((op, i) => {
      const base = 8 + OP_WORDS * 8 * i;
      const word = (k: number, v: bigint): void => void out.writeBigUInt64LE(BigInt.asUintN(64, v), base + 8 * k);
      word(0, BigInt(op.kind));
      word(1, op.kind === 0 ? BigInt(op.nr) : labelIndex(op.target!));
      let mask = 0;
      op.args.forEach((arg, k) => {
        if (typeof arg === 'object' && 'load' in arg) {
          mask |= 1 << k;
          word(2 + k, address(arg.load));
        } else word(2 + k, typeof arg === 'object' ? address(arg) : BigInt(arg));
      });
      if (op.store) mask |= 0x100;
      word(8, BigInt(mask));
      word(9, op.store ? address(op.store) : 0n);
      word(10, op.fail ? labelIndex(op.fail) : NO_TARGET);
    });
    let at = 8 + OP_WORDS * 8 * this.#ops.length;
    for (const chunk of this.#data) {
      chunk.copy(out, at);
      at += chunk.length;
    }
    for (const { at: offset, values } of this.#pointerWords) {
      values.forEach((v, k) => out.writeBigUInt64LE(typeof v === 'bigint' ? BigInt.asUintN(64, v) : address(v), 8 + OP_WORDS * 8 * this.#ops.length + offset + 8 * k));
    }
    if (out.length > MAX_TAPE_BYTES) throw new Error(`tape of ${out.length} bytes, more than ${MAX_TAPE_BYTES}`);
    return out;
  }
}
