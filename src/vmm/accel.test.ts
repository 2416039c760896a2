import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { isFailedPrecondition } from '../errors/index.js';
import { cpuFlags, decideAccel, hostTscKhz, type HostFacts } from './accel.js';

/** cpuinfo returns /proc/cpuinfo text for two processors; mhz null leaves out the `cpu MHz` lines. */
function cpuinfo(flags: string, mhz: string | null = '2596.120'): string {
  const processor = (n: number) =>
    [
      `processor\t: ${n}`,
      'vendor_id\t: GenuineIntel',
      'model name\t: Intel(R) Xeon(R) Platinum 8272CL CPU @ 2.60GHz',
      ...(mhz === null ? [] : [`cpu MHz\t\t: ${n === 0 ? mhz : '1.000'}`]),
      `flags\t\t: fpu vme de pse tsc msr ${n === 0 ? flags : 'vmx svm'} sse sse2`,
      '',
    ].join('\n');
  return processor(0) + '\n' + processor(1);
}

const KVM_OPENS = undefined;
const KVM_MISSING = "ENOENT: no such file or directory, open '/dev/kvm'";

function facts(flags: string, kvmOpenError: string | undefined): HostFacts {
  return { cpuinfo: cpuinfo(flags), kvmOpenError };
}

describe('decideAccel()', () => {
  it('chooses kvm when the CPU has vmx and /dev/kvm opens', () => {
    const choice = decideAccel(facts('vmx hypervisor', KVM_OPENS), 'auto');
    assert.equal(choice.accel, 'kvm');
    assert.match(choice.reason, /vmx/);
  });

  it('chooses kvm when the CPU has svm and /dev/kvm opens', () => {
    assert.equal(decideAccel(facts('svm', KVM_OPENS), 'auto').accel, 'kvm');
  });

  it('chooses tcg on a PVM-only host: /dev/kvm opens but no vmx or svm', () => {
    const choice = decideAccel(facts('hypervisor tsc_known_freq', KVM_OPENS), 'auto');
    assert.equal(choice.accel, 'tcg');
    assert.match(choice.reason, /no vmx or svm/);
  });

  it('chooses tcg when /dev/kvm does not open, and says why', () => {
    const choice = decideAccel(facts('vmx', KVM_MISSING), 'auto');
    assert.equal(choice.accel, 'tcg');
    assert.match(choice.reason, /ENOENT/);
  });

  it('looks only at the first processor and whole flag words', () => {
    assert.equal(decideAccel(facts('vmxx svmy', KVM_OPENS), 'auto').accel, 'tcg');
  });

  it('uses tcg when configuration forces it, even where kvm works', () => {
    const choice = decideAccel(facts('vmx', KVM_OPENS), 'tcg');
    assert.equal(choice.accel, 'tcg');
    assert.match(choice.reason, /^forced by configuration/);
  });

  it('uses kvm when forced and it works', () => {
    assert.equal(decideAccel(facts('svm', KVM_OPENS), 'kvm').accel, 'kvm');
  });

  it('refuses forced kvm where it cannot work, with a failed_precondition naming the reason', () => {
    assert.throws(() => decideAccel(facts('hypervisor', KVM_OPENS), 'kvm'), (error: Error) => {
      assert.ok(isFailedPrecondition(error));
      assert.match(error.message, /kvm.*no vmx or svm/);
      return true;
    });
    assert.throws(() => decideAccel(facts('vmx', KVM_MISSING), 'kvm'), isFailedPrecondition);
  });
});

describe('cpuFlags()', () => {
  it('returns the flags of processor 0', () => {
    const flags = cpuFlags(cpuinfo('hypervisor'));
    assert.ok(flags.has('hypervisor'));
    assert.ok(!flags.has('vmx'));
  });

  it('returns no flags for text without a flags line', () => {
    assert.equal(cpuFlags('processor\t: 0\n').size, 0);
  });
});

describe('hostTscKhz()', () => {
  it('is cpu MHz of processor 0 in kHz, rounded', () => {
    assert.equal(hostTscKhz(cpuinfo('', '2596.120')), 2596120);
    assert.equal(hostTscKhz(cpuinfo('', '2999.9996')), 3000000);
  });

  it('is undefined when cpuinfo has no usable cpu MHz', () => {
    assert.equal(hostTscKhz(cpuinfo('', null)), undefined);
    assert.equal(hostTscKhz(cpuinfo('', 'unknown')), undefined);
    assert.equal(hostTscKhz(cpuinfo('', '0')), undefined);
  });
});
