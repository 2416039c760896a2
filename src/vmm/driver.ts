/**
 * driver — the one small interface between a sandbox and the hypervisor that runs its VM.
 *
 * A VmDriver turns a VmSpec into a running VM process and hands back a VmHandle. QEMU (microvm) is
 * the driver that runs on our machines (`qemu.ts`); Cloud Hypervisor or Firecracker would implement
 * the same two types. The driver owns the VM *process* and the files it creates for it in
 * `spec.stateDir`; it knows nothing about the guest agent: start() returns once the hypervisor is up
 * and the guest has been let run, and the caller waits for the agent on `agentSocketPath`.
 */

/** Accel is the accelerator a VM actually runs with (see accel.ts for how it is chosen). */
export type Accel = 'kvm' | 'tcg';

/** VmNetSpec attaches one virtio-net device, backed by an existing tap device. */
export interface VmNetSpec {
  /** tapName is a tap device that already exists (made by src/net in the pod netns). */
  tapName: string;
  /** mac is the guest NIC's address, "aa:bb:cc:dd:ee:ff" (the pod veth's, so CNI's view holds). */
  mac: string;
  /** netns is the network namespace (a bind-mounted path) the tap lives in; the VMM runs inside it. */
  netns?: string;
}

/**
 * VmTemplateRef names a saved template (src/factory) to restore a clone from. The clone must be
 * started with the template's vCPUs, memory, accelerator, kernel, initrd, root disk and kernel
 * arguments (the factory's cloneSpec() fills them in): the saved device state only fits that machine.
 */
export interface VmTemplateRef {
  /** stateFile is the saved device state (VmHandle.saveTemplate wrote it). */
  stateFile: string;
  /** ramFile is the template's guest RAM; the clone maps it private (copy-on-write), never writes it. */
  ramFile: string;
}

/** VmMachine is the shape of a VM that a template is made of and its clones restore. */
export interface VmMachine {
  vcpus: number;
  memoryMiB: number;
  kernelArgs: string[];
  accel: 'auto' | Accel;
}

/** VmIdentity is what a saved state of a VmMachine depends on on this host, beyond the spec. */
export interface VmIdentity {
  /** accel is the accelerator the machine runs with here (a clone gets it explicitly). */
  accel: Accel;
  /** hypervisor identifies its build and everything it is told (equal values restore each other's state). */
  hypervisor: Record<string, unknown>;
}

/**
 * VmTemplating is what a driver offers for templates: saving a running VM's device state
 * (VmHandle.saveTemplate), restoring a clone of it (VmSpec.template), and this.
 */
export interface VmTemplating {
  /** identity resolves `machine` on this host; it fails when the hypervisor cannot run. */
  identity(machine: VmMachine): Promise<VmIdentity>;
  /** guestMac is the NIC address in every saved state: every clone's, until its agent changes it. */
  readonly guestMac: string;
}

/**
 * VmJail confines the VMM (jail.ts): its own mount and PID namespaces rooted in `<stateDir>/jail`
 * with only what the VM needs, this unprivileged uid/gid, and only the capabilities 9p needs.
 */
export interface VmJail {
  uid: number;
  gid: number;
}

/** VmSpec is everything a driver needs to start one VM. Paths are absolute host paths. */
export interface VmSpec {
  /** id names the VM (the sandbox id); letters, digits, '.', '_', '-', at most 76 characters (containerd's limit). */
  id: string;
  /** stateDir is /run/hull/<id>: it exists and is 0700; the driver puts its sockets and files here. */
  stateDir: string;
  vcpus: number;
  memoryMiB: number;
  kernel: string;
  initrd: string;
  /** rootDisk is attached read-only as the first virtio-blk disk. */
  rootDisk: string;
  /** sharedDir is exported to the guest over virtio-9p with mount tag SHARE_TAG (src/common/names.ts). */
  sharedDir: string;
  /** kernelArgs are appended after the driver's own kernel command line (later ones win). */
  kernelArgs?: string[];
  /** accel defaults to 'auto': kvm where hardware virtualization works, else tcg. */
  accel?: 'auto' | Accel;
  /**
   * startTimeoutMs bounds start(): the hypervisor must be up (control socket answering, agent
   * socket present) within it. Default 10 000. The guest's own boot is the caller's to wait for.
   */
  startTimeoutMs?: number;
  /**
   * net, when given, backs the virtio-net device with a tap. Without it a cold-booted VM has no
   * network device, while a template or clone has one that reaches nothing (microvm has no hotplug:
   * a clone needs every device its template had). A clone's NIC keeps the template's MAC
   * (VmTemplating.guestMac): device state comes from the template, not from `net.mac`.
   */
  net?: VmNetSpec;
  /**
   * templateRamFile makes this VM a template source: guest RAM lives in this file (shared, so the
   * guest's writes reach it; put it on tmpfs), and saveTemplate() can capture the VM. The file is
   * the caller's: the driver never removes it. Not together with `template`.
   */
  templateRamFile?: string;
  /** template makes this VM a clone of a saved template, restored instead of booted. */
  template?: VmTemplateRef;
  /** jail confines the VMM; without it the VMM runs as the caller (root) in the host's namespaces. */
  jail?: VmJail;
  /**
   * lifeline is a FIFO (made by the caller) that the VM lives on: the VMM is killed once no process
   * holds it open for writing (the caller opens it before start). Without it the VMM dies with the
   * process that started it. A VM on a lifeline can be handed to another process: its starter
   * detaches (VmHandle.detach), the other adopts it (VmDriver.adopt) and holds the lifeline.
   */
  lifeline?: string;
}

/** RunningVm is a VM on a lifeline that its starter detached from, for another process to adopt. */
export interface RunningVm {
  /** pid and startTime (field 22 of /proc/<pid>/stat) name the VMM for good. */
  pid: number;
  startTime: string;
  /** chain: the VM's other host processes (its lifeline's holder, its jail's unshare), outermost first. */
  chain: number[];
  accel: Accel;
}

/** VmExit is how the VM process ended: an exit code, or the signal that killed it. */
export interface VmExit {
  code: number | null;
  signal: string | null;
}

/** VmHandle is one running VM. Every method may be called after the VM died on its own. */
export interface VmHandle {
  readonly id: string;
  /** pid is the hypervisor process (also written to `<stateDir>/qemu.pid` for a memory-less cleanup). */
  readonly pid: number;
  /** hostPids are all the VM's host processes, the hypervisor last (a pod's cgroup must hold them all). */
  readonly hostPids: readonly number[];
  /** agentSocketPath is the unix socket carrying the guest agent's byte stream (connect as client). */
  readonly agentSocketPath: string;
  readonly accel: Accel;
  /**
   * agentPortOpened resolves once the guest opened the agent port. Bytes sent
   * before that wait inside the hypervisor, so a client should not talk to
   * the agent earlier. Never rejects: race it with `exited`.
   */
  readonly agentPortOpened: Promise<void>;
  /**
   * onAgentPortChange calls `listener` each time the guest opens or closes the agent port, from now
   * on: the agent exited (the guest's init starts another, which knows nothing of what the first one
   * ran) or reopened it after its host connection ended. Only a hint: QEMU sends at most one
   * VSERPORT_CHANGE a second per port, the last state winning, so a late event may tell of a close
   * long over, and a quick close and open may come as the open alone. Ask the agent who it is.
   * Returns what stops the calls.
   */
  onAgentPortChange(listener: (open: boolean) => void): () => void;
  /** consoleTail returns the last bytes (default 16 KiB) the guest wrote to its serial console. */
  consoleTail(maxBytes?: number): string;
  /** pause stops the vCPUs; resume lets them run again. Both fail once the VM has exited. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /**
   * shutdown ends the VM process (politely, then SIGKILL after `deadlineMs`, default 5000) and
   * removes every file the driver made except the console log, which stays for post-mortems until
   * the caller removes the state directory. Idempotent; safe after the VM died on its own, and
   * still needed then (to remove the files).
   */
  shutdown(opts?: { deadlineMs?: number }): Promise<void>;
  /** exited resolves once the process has exited and its console output has been captured. */
  readonly exited: Promise<VmExit>;
  /**
   * saveTemplate stops the vCPUs for good and writes the device state to `stateFile` (created, must
   * not exist); guest RAM is not copied: it stays in `spec.templateRamFile`. Only for VMs started
   * with templateRamFile. The VM stays stopped: the caller then shuts it down, and from then on
   * nothing may write the RAM file. Optional: drivers without templating leave it out.
   */
  saveTemplate?(stateFile: string): Promise<void>;
  /**
   * detach lets go of a VM started with a lifeline, leaving it running for another process to
   * adopt; the handle is of no more use. Fails for a VM without a lifeline.
   */
  detach?(): Promise<RunningVm>;
}

/** VmDriver starts VMs of one hypervisor. */
export interface VmDriver {
  readonly name: string;
  /**
   * start runs a VM. On failure it rejects with a HullError (carrying the hypervisor's error output
   * and the console tail) and leaves no process behind and no file but the console log.
   */
  start(spec: VmSpec): Promise<VmHandle>;
  /**
   * adopt attaches to `running`, a VM started from `spec` (with a lifeline) that its starter
   * detached from. The caller must hold the lifeline. Optional: drivers that cannot leave it out.
   */
  adopt?(spec: VmSpec, running: RunningVm): Promise<VmHandle>;
  /** templating is present when the driver can save VMs as templates and restore clones of them. */
  readonly templating?: VmTemplating;
}
