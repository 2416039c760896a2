/**
 * accel — which accelerator a VM runs with, and why (the reason is what `hull check` prints).
 *
 * 'kvm' only when the CPU offers hardware virtualization (vmx or svm in /proc/cpuinfo) AND /dev/kvm
 * opens read-write. The second test alone is not enough: our machines have a PVM-only /dev/kvm that
 * opens fine, yet an ordinary guest kernel hangs under it. Everything else gets 'tcg' (QEMU's
 * software emulation, multi-threaded): slower, but the isolation holds. Configuration may force
 * either; forcing 'kvm' where it cannot work is an error rather than a hung VM.
 *
 * The decision itself (decideAccel) is pure, so tests feed it any cpuinfo text.
 */

import { open, readFile } from 'node:fs/promises';
import { HullError } from '../errors/index.js';
import type { Accel } from './driver.js';

/** AccelChoice is the accelerator to use and a sentence saying why. */
export interface AccelChoice {
  accel: Accel;
  reason: string;
}

/** HostFacts is what the decision looks at. */
export interface HostFacts {
  /** cpuinfo is the text of /proc/cpuinfo. */
  cpuinfo: string;
  /** kvmOpenError is why /dev/kvm did not open read-write, or undefined when it did. */
  kvmOpenError: string | undefined;
}

/** AccelRequest is what configuration asks for. */
export type AccelRequest = 'auto' | Accel;

const CPUINFO_PATH = '/proc/cpuinfo';
const KVM_PATH = '/dev/kvm';

/** readHostFacts reads /proc/cpuinfo and tries to open /dev/kvm read-write. */
export async function readHostFacts(): Promise<HostFacts> {
  const cpuinfo = await readFile(CPUINFO_PATH, 'utf8');
  let kvmOpenError: string | undefined;
  try {
    const handle = await open(KVM_PATH, 'r+');
    await handle.close();
  } catch (error) {
    kvmOpenError = error instanceof Error ? error.message : String(error);
  }
  return { cpuinfo, kvmOpenError };
}

/** chooseAccel decides for this host (facts may be passed in to skip reading them again). */
export async function chooseAccel(request: AccelRequest = 'auto', facts?: HostFacts): Promise<AccelChoice> {
  return decideAccel(facts ?? (await readHostFacts()), request);
}

/**
 * decideAccel picks the accelerator from host facts. It throws HullError('failed_precondition') when
 * 'kvm' is forced on a host where a KVM guest cannot run.
 */
export function decideAccel(facts: HostFacts, request: AccelRequest): AccelChoice {
  const virtFlags = ['vmx', 'svm'].filter((flag) => cpuFlags(facts.cpuinfo).has(flag));
  const kvmWorks = virtFlags.length > 0 && facts.kvmOpenError === undefined;
  let why: string;
  if (kvmWorks) {
    why = `${CPUINFO_PATH} has ${virtFlags.join(' and ')} and ${KVM_PATH} opens read-write`;
  } else if (virtFlags.length > 0) {
    why = `${CPUINFO_PATH} has ${virtFlags.join(' and ')} but ${KVM_PATH} does not open read-write: ${facts.kvmOpenError}`;
  } else if (facts.kvmOpenError === undefined) {
    why = `${KVM_PATH} opens but ${CPUINFO_PATH} has no vmx or svm flag (no hardware virtualization; an ordinary guest hangs under such a KVM)`;
  } else {
    why = `${CPUINFO_PATH} has no vmx or svm flag and ${KVM_PATH} does not open read-write: ${facts.kvmOpenError}`;
  }

  switch (request) {
    case 'auto':
      return { accel: kvmWorks ? 'kvm' : 'tcg', reason: why };
    case 'tcg':
      return { accel: 'tcg', reason: `forced by configuration (${why})` };
    case 'kvm':
      if (!kvmWorks) throw new HullError('failed_precondition', `Cannot use accelerator "kvm" as configured: ${why}`);
      return { accel: 'kvm', reason: `forced by configuration (${why})` };
  }
}

/** cpuFlags returns the `flags` of the first processor listed in /proc/cpuinfo text. */
export function cpuFlags(cpuinfo: string): Set<string> {
  const value = firstField(cpuinfo, 'flags');
  return new Set(value === undefined ? [] : value.split(/\s+/).filter(Boolean));
}

/**
 * hostTscKhz returns the host's TSC frequency in kHz for the guest's `tsc_early_khz=`, read from
 * the `cpu MHz` line of processor 0 in /proc/cpuinfo (×1000, rounded); undefined when absent.
 *
 * Source and its limits: on a VM host with a fixed TSC (flags `constant_tsc`, `tsc_known_freq`, as
 * here) that line is the kernel's TSC frequency. On bare metal with frequency scaling it is the
 * current core clock instead, which can differ from the TSC; that is why the QEMU driver passes it
 * only to TCG guests (whose TSC ticks with the host's and who otherwise sometimes hang calibrating
 * against the PIT), and lets KVM guests read their TSC frequency from kvmclock.
 */
export function hostTscKhz(cpuinfo: string): number | undefined {
  const value = firstField(cpuinfo, 'cpu MHz');
  if (value === undefined) return undefined;
  const mhz = Number(value);
  if (!Number.isFinite(mhz) || mhz <= 0) return undefined;
  return Math.round(mhz * 1000);
}

/** firstField returns the value of the first "name<tabs>: value" line, trimmed. */
function firstField(cpuinfo: string, name: string): string | undefined {
  for (const line of cpuinfo.split('\n')) {
    const colon = line.indexOf(':');
    if (colon >= 0 && line.slice(0, colon).trim() === name) return line.slice(colon + 1).trim();
  }
  return undefined;
}
