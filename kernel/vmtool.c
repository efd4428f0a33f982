// SPDX-License-Identifier: GPL-2.0-only
/*
 * vmtool.ko: publishes hardware-virtualization facts under <debugfs>/vmtool/.
 *
 * The interface (file names, formats, parameters) is fixed by docs/debugfs-interface.md; docs/kernel.md
 * explains the design. In short:
 *   - global files: the VMX capability MSRs (Intel) or the SVM facts (AMD), read once at load;
 *   - cpu-NNN/ per online CPU, created and removed by a CPU hot-plug (cpuhp) state;
 *   - one kthread per CPU, bound to it, that looks for the current VMCS with VMPTRST every interval_ms;
 *     each VMCS address seen gets cpu-NNN/<%llx> (32-byte last-seen seconds) and cpu-NNN/<%llx>.info;
 *   - cpu-NNN/sysregs: CR0, CR2, CR3, CR4, CR8 read on that CPU when the file is read.
 *
 * Lifetime and locking (why reads cannot touch freed memory):
 *   - Only the CPU's own kthread adds, moves or evicts entries in its list, so the list needs no lock.
 *   - Readers only look at one entry's counters; those are written and copied under vc->lock (a spinlock:
 *     the critical sections are a few loads and stores).
 *   - An entry (or a whole vmtool_cpu) is freed only after debugfs_remove() of its files has returned, and
 *     debugfs_remove() waits for every read already running on those files (debugfs's file_get/put
 *     protection, which debugfs_create_file() gives) and makes later ones fail with -EIO. So a reader holds
 *     a valid pointer for as long as it runs, without RCU.
 *   - At CPU offline the thread is stopped first (no more updates), then the directory is removed, then
 *     the entries are freed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/cpu.h>
#include <linux/cpuhotplug.h>
#include <linux/debugfs.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/list.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/percpu.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <asm/asm.h>
#include <asm/msr.h>
#include <asm/processor.h>
#include <asm/special_insns.h>

#define VMTOOL_INTERVAL_MIN 10
#define VMTOOL_INTERVAL_MAX 60000
#define VMTOOL_MAX_VMCS_MAX 65536
#define VMTOOL_TIME_FILE_SIZE 32 /* the original module's format: decimal seconds, NUL-padded */
#define VMTOOL_NO_VMCS (~0ULL)	 /* what VMPTRST stores when no VMCS is current (SDM, VMPTRST) */

/* ---------------------------------------------------------------- module parameters */

static unsigned int vmtool_interval_ms = 1000;
static unsigned int vmtool_max_vmcs = 512;

/* Bumped when interval_ms changes, so sleeping threads wake and pick up the new interval at once. */
static atomic_t vmtool_interval_gen = ATOMIC_INIT(0);
static DECLARE_WAIT_QUEUE_HEAD(vmtool_wq);

static int vmtool_param_set_bounded(const char *val, unsigned int *out, unsigned int min, unsigned int max)
{
	unsigned int v;
	int err = kstrtouint(val, 10, &v);

	if (err)
		return err;
	if (v < min || v > max)
		return -ERANGE;
	WRITE_ONCE(*out, v);
	return 0;
}

static int vmtool_interval_set(const char *val, const struct kernel_param *kp)
{
	int err = vmtool_param_set_bounded(val, kp->arg, VMTOOL_INTERVAL_MIN, VMTOOL_INTERVAL_MAX);

	if (err)
		return err;
	atomic_inc(&vmtool_interval_gen);
	wake_up_all(&vmtool_wq);
	return 0;
}

static const struct kernel_param_ops vmtool_interval_ops = {
	.set = vmtool_interval_set,
	.get = param_get_uint,
};
module_param_cb(interval_ms, &vmtool_interval_ops, &vmtool_interval_ms, 0644);
MODULE_PARM_DESC(interval_ms, "how often each per-CPU thread looks for the current VMCS, in ms (10..60000)");

static int vmtool_max_vmcs_set(const char *val, const struct kernel_param *kp)
{
	return vmtool_param_set_bounded(val, kp->arg, 1, VMTOOL_MAX_VMCS_MAX);
}

static const struct kernel_param_ops vmtool_max_vmcs_ops = {
	.set = vmtool_max_vmcs_set,
	.get = param_get_uint,
};
/* Read-only at run time: it bounds memory; the least recently seen entry goes when a CPU's list is full. */
module_param_cb(max_vmcs, &vmtool_max_vmcs_ops, &vmtool_max_vmcs, 0444);
MODULE_PARM_DESC(max_vmcs, "most VMCS entries kept per CPU; the least recently seen is dropped (1..65536)");

#ifdef VMTOOL_FAKE_VMCS
/*
 * Test build only (make VMTOOL_FAKE_VMCS=y): on a CPU without VMX (e.g. QEMU's TCG) the thread invents
 * VMCS addresses, cycling through fake_vmcs of them per CPU, so that the entry files, their reads racing
 * the updates, eviction, hot-plug and unload can be tested in a real kernel. Never in a real build.
 */
static unsigned int vmtool_fake_vmcs = 6;
static int vmtool_fake_vmcs_set(const char *val, const struct kernel_param *kp)
{
	return vmtool_param_set_bounded(val, kp->arg, 1, 4096);
}

static const struct kernel_param_ops vmtool_fake_vmcs_ops = {
	.set = vmtool_fake_vmcs_set,
	.get = param_get_uint,
};
module_param_cb(fake_vmcs, &vmtool_fake_vmcs_ops, &vmtool_fake_vmcs, 0444);
MODULE_PARM_DESC(fake_vmcs, "TEST BUILD: how many invented VMCS addresses each CPU cycles through");
#endif

/* ---------------------------------------------------------------- global files */

static struct dentry *vmtool_root;
static bool vmtool_has_vmx; /* VMX_BASIC could be read: the threads try VMPTRST */

/* Storage behind the debugfs_create_x64() files: they print from these until the tree is removed. */
#define VMTOOL_MAX_GLOBALS 32
static u64 vmtool_globals[VMTOOL_MAX_GLOBALS];
static unsigned int vmtool_nglobals;

static void vmtool_add_value(const char *name, u64 value)
{
	u64 *slot;

	if (WARN_ON_ONCE(vmtool_nglobals >= VMTOOL_MAX_GLOBALS))
		return;
	slot = &vmtool_globals[vmtool_nglobals++];
	*slot = value;
	debugfs_create_x64(name, 0444, vmtool_root, slot);
}

/* Reads an MSR (fault-safe) into a new global file; false, and no file, when the read faults. */
static bool vmtool_add_msr(const char *name, u32 msr, u64 *value)
{
	u64 v;

	if (rdmsrl_safe(msr, &v)) {
		pr_info("rdmsr 0x%x faulted: no %s file\n", msr, name);
		return false;
	}
	vmtool_add_value(name, v);
	if (value)
		*value = v;
	return true;
}

/*
 * VMX capability MSRs. Which ones exist follows the SDM (Vol. 3D, Appendix A): 0x480-0x48A with VMX;
 * 0x48B when the primary processor-based controls allow "activate secondary controls" (allowed-1 bit 63);
 * 0x48C when the secondary controls allow EPT (bit 33) or VPID (bit 37); 0x48D-0x490 when VMX_BASIC bit 55;
 * 0x491 when the secondary controls allow VM functions (bit 45); 0x492 when the primary controls allow
 * "activate tertiary controls" (bit 49); 0x493 when the exit controls allow "activate secondary controls"
 * (bit 63).
 */
static void vmtool_add_vmx_files(void)
{
	static const struct {
		const char *name;
		u32 msr;
	} base[] = {
		{ "vmx-pinbased-ctls", 0x481 }, { "vmx-misc", 0x485 },	    { "vmx-cr0-fixed0", 0x486 },
		{ "vmx-cr0-fixed1", 0x487 },	{ "vmx-cr4-fixed0", 0x488 }, { "vmx-cr4-fixed1", 0x489 },
		{ "vmx-vmcs-enum", 0x48a },
	};
	u64 basic = 0, procbased = 0, procbased2 = 0, exit = 0;
	unsigned int i;

	if (!(cpuid_ecx(1) & BIT(5))) {
		pr_info("CPUID.1:ECX[5] (VMX) is clear: no vmx-* files, no VMCS sampling\n");
		return;
	}
	vmtool_add_msr("feature-control", MSR_IA32_FEAT_CTL, NULL);
	if (!vmtool_add_msr("vmx-basic", 0x480, &basic))
		return;
	vmtool_has_vmx = true;
	for (i = 0; i < ARRAY_SIZE(base); i++)
		vmtool_add_msr(base[i].name, base[i].msr, NULL);
	vmtool_add_msr("vmx-procbased-ctls", 0x482, &procbased);
	vmtool_add_msr("vmx-exit-ctls", 0x483, &exit);
	vmtool_add_msr("vmx-entry-ctls", 0x484, NULL);
	if (procbased & BIT_ULL(63))
		vmtool_add_msr("vmx-procbased-ctls2", 0x48b, &procbased2);
	if (procbased2 & (BIT_ULL(33) | BIT_ULL(37)))
		vmtool_add_msr("vmx-ept-vpid-cap", 0x48c, NULL);
	if (basic & BIT_ULL(55)) {
		vmtool_add_msr("vmx-true-pinbased-ctls", 0x48d, NULL);
		vmtool_add_msr("vmx-true-procbased-ctls", 0x48e, NULL);
		vmtool_add_msr("vmx-true-exit-ctls", 0x48f, NULL);
		vmtool_add_msr("vmx-true-entry-ctls", 0x490, NULL);
	}
	if (procbased2 & BIT_ULL(45))
		vmtool_add_msr("vmx-vmfunc", 0x491, NULL);
	if (procbased & BIT_ULL(49))
		vmtool_add_msr("vmx-procbased-ctls3", 0x492, NULL);
	if (exit & BIT_ULL(63))
		vmtool_add_msr("vmx-exit-ctls2", 0x493, NULL);
}

/* AMD-V: CPUID 0x8000000A (revision, ASIDs, feature word) and the VM_CR MSR. */
static void vmtool_add_svm_files(void)
{
	u32 eax, ebx, ecx, edx;

	if (cpuid_eax(0x80000000) < 0x8000000a || !(cpuid_ecx(0x80000001) & BIT(2))) {
		pr_info("CPUID 0x80000001:ECX[2] (SVM) is clear: no svm-* files\n");
		return;
	}
	cpuid(0x8000000a, &eax, &ebx, &ecx, &edx);
	vmtool_add_value("svm-features", edx);
	vmtool_add_value("svm-revision", eax);
	vmtool_add_value("svm-nasid", ebx);
	vmtool_add_msr("vm-cr", MSR_VM_CR, NULL);
}

/* ---------------------------------------------------------------- per-CPU state */

struct vmtool_cpu;

struct vmtool_vmcs {
	struct list_head node; /* in vc->vmcs, most recently seen first; only the CPU's thread touches it */
	struct vmtool_cpu *vc;
	u64 pa;
	/* under vc->lock */
	u64 first_seen_ns;
	u64 last_seen_ns;
	u64 sightings;
	struct dentry *file;
	struct dentry *info;
};

struct vmtool_cpu {
	unsigned int cpu;
	spinlock_t lock; /* the counters of this CPU's entries */
	struct list_head vmcs;
	unsigned int nr_vmcs;
	struct dentry *dir;
	struct task_struct *thread;
#ifdef VMTOOL_FAKE_VMCS
	unsigned int fake_next;
#endif
};

static DEFINE_PER_CPU(struct vmtool_cpu *, vmtool_cpus);
static enum cpuhp_state vmtool_hp_state;
static struct kmem_cache *vmtool_cpu_cache;
static struct kmem_cache *vmtool_vmcs_cache;

/* ---------------------------------------------------------------- VMCS sampling */

/*
 * VMPTRST outside VMX operation raises #UD (SDM, VMPTRST). The extable entry turns a fault into "no VMCS"
 * instead of an oops: the second line behind the CR4.VMXE check (e.g. VMXE set by a hypervisor that has not
 * executed VMXON yet, or an emergency VMXOFF from NMI context).
 */
static bool vmtool_vmptrst(u64 *pa)
{
	asm goto("1: vmptrst %0\n\t" _ASM_EXTABLE(1b, %l[fault]) : : "m"(*pa) : "cc", "memory" : fault);
	return true;
fault:
	return false;
}

/* The current-VMCS pointer on this CPU, or false when there is none or the CPU is not in VMX operation. */
static bool vmtool_current_vmcs(struct vmtool_cpu *vc, u64 *pa)
{
	unsigned long flags;
	bool ok = false;

	if (vmtool_has_vmx) {
		/*
		 * Interrupts off so that nothing can run VMXOFF (KVM does it from an IPI or a hot-plug
		 * callback) between the CR4.VMXE test and VMPTRST. The thread is bound to this CPU.
		 */
		local_irq_save(flags);
		if (__read_cr4() & X86_CR4_VMXE)
			ok = vmtool_vmptrst(pa);
		local_irq_restore(flags);
		return ok && *pa != VMTOOL_NO_VMCS;
	}
#ifdef VMTOOL_FAKE_VMCS
	*pa = 0x7f000000ULL + ((u64)vc->cpu << 20) + ((u64)vc->fake_next << 12);
	vc->fake_next = (vc->fake_next + 1) % READ_ONCE(vmtool_fake_vmcs);
	return true;
#else
	return false;
#endif
}

static void vmtool_vmcs_remove(struct vmtool_vmcs *e)
{
	/* Returns only when no read of these files is running any more: then e can go. */
	debugfs_remove(e->info);
	debugfs_remove(e->file);
	kmem_cache_free(vmtool_vmcs_cache, e);
}

static ssize_t vmtool_vmcs_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	struct vmtool_vmcs *e = file->private_data;
	char text[VMTOOL_TIME_FILE_SIZE] = {};
	u64 ns;

	spin_lock(&e->vc->lock);
	ns = e->last_seen_ns;
	spin_unlock(&e->vc->lock);
	snprintf(text, sizeof(text), "%llu", div_u64(ns, NSEC_PER_SEC));
	return simple_read_from_buffer(buf, len, ppos, text, sizeof(text));
}

static ssize_t vmtool_vmcs_info_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	struct vmtool_vmcs *e = file->private_data;
	char text[128];
	u64 last, first, count;
	int n;

	spin_lock(&e->vc->lock);
	last = e->last_seen_ns;
	first = e->first_seen_ns;
	count = e->sightings;
	spin_unlock(&e->vc->lock);
	n = scnprintf(text, sizeof(text), "last_seen_ns %llu\nfirst_seen_ns %llu\nsightings %llu\n", last, first,
		      count);
	return simple_read_from_buffer(buf, len, ppos, text, n);
}

static const struct file_operations vmtool_vmcs_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = vmtool_vmcs_read,
	.llseek = default_llseek,
};

static const struct file_operations vmtool_vmcs_info_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = vmtool_vmcs_info_read,
	.llseek = default_llseek,
};

/* Records a sighting of pa on vc's CPU. Runs in vc's thread only. */
static void vmtool_vmcs_seen(struct vmtool_cpu *vc, u64 pa)
{
	struct vmtool_vmcs *e;
	char name[32];
	u64 now = ktime_get_real_ns();

	list_for_each_entry(e, &vc->vmcs, node) {
		if (e->pa == pa) {
			spin_lock(&vc->lock);
			e->last_seen_ns = now;
			e->sightings++;
			spin_unlock(&vc->lock);
			list_move(&e->node, &vc->vmcs);
			return;
		}
	}

	e = kmem_cache_zalloc(vmtool_vmcs_cache, GFP_KERNEL);
	if (!e)
		return; /* seen again at the next tick; nothing evicted for nothing */

	if (vc->nr_vmcs >= READ_ONCE(vmtool_max_vmcs)) {
		struct vmtool_vmcs *oldest = list_last_entry(&vc->vmcs, struct vmtool_vmcs, node);

		list_del(&oldest->node);
		vc->nr_vmcs--;
		vmtool_vmcs_remove(oldest);
	}
	e->vc = vc;
	e->pa = pa;
	e->first_seen_ns = now;
	e->last_seen_ns = now;
	e->sightings = 1;
	snprintf(name, sizeof(name), "%llx", pa);
	e->file = debugfs_create_file(name, 0444, vc->dir, e, &vmtool_vmcs_fops);
	snprintf(name, sizeof(name), "%llx.info", pa);
	e->info = debugfs_create_file(name, 0444, vc->dir, e, &vmtool_vmcs_info_fops);
	list_add(&e->node, &vc->vmcs);
	vc->nr_vmcs++;
}

static int vmtool_thread(void *data)
{
	struct vmtool_cpu *vc = data;

	while (!kthread_should_stop()) {
		int gen = atomic_read(&vmtool_interval_gen);
		u64 pa;

		if (vmtool_current_vmcs(vc, &pa))
			vmtool_vmcs_seen(vc, pa);
		wait_event_interruptible_timeout(vmtool_wq,
						 kthread_should_stop() || atomic_read(&vmtool_interval_gen) != gen,
						 msecs_to_jiffies(READ_ONCE(vmtool_interval_ms)));
	}
	return 0;
}

/* ---------------------------------------------------------------- sysregs */

struct vmtool_sysregs {
	u64 cr0, cr2, cr3, cr4, cr8;
};

static void vmtool_read_sysregs(void *arg)
{
	struct vmtool_sysregs *r = arg;
	unsigned long cr8;

	r->cr0 = read_cr0();
	r->cr2 = read_cr2();
	r->cr3 = __read_cr3();
	r->cr4 = __read_cr4();
	asm volatile("mov %%cr8, %0" : "=r"(cr8));
	r->cr8 = cr8;
}

static ssize_t vmtool_sysregs_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	struct vmtool_cpu *vc = file->private_data;
	struct vmtool_sysregs r;
	char text[160];
	int err, n;

	/*
	 * On that CPU, in an IPI. It is online: its offline callback removes this file first, and that waits
	 * for this read to finish.
	 */
	err = smp_call_function_single(vc->cpu, vmtool_read_sysregs, &r, 1);
	if (err)
		return err;
	n = scnprintf(text, sizeof(text),
		      "cr0 0x%016llx\ncr2 0x%016llx\ncr3 0x%016llx\ncr4 0x%016llx\ncr8 0x%016llx\n", r.cr0,
		      r.cr2, r.cr3, r.cr4, r.cr8);
	return simple_read_from_buffer(buf, len, ppos, text, n);
}

static const struct file_operations vmtool_sysregs_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = vmtool_sysregs_read,
	.llseek = default_llseek,
};

/* ---------------------------------------------------------------- CPU hot-plug */

static void vmtool_cpu_free(struct vmtool_cpu *vc)
{
	struct vmtool_vmcs *e, *tmp;

	/* Waits for running reads of any file below; the thread is already stopped. */
	debugfs_remove(vc->dir);
	list_for_each_entry_safe(e, tmp, &vc->vmcs, node) {
		list_del(&e->node);
		kmem_cache_free(vmtool_vmcs_cache, e);
	}
	kmem_cache_free(vmtool_cpu_cache, vc);
}

static int vmtool_cpu_online(unsigned int cpu)
{
	struct vmtool_cpu *vc;
	char name[16];
	int err;

	vc = kmem_cache_zalloc(vmtool_cpu_cache, GFP_KERNEL);
	if (!vc)
		return -ENOMEM;
	vc->cpu = cpu;
	spin_lock_init(&vc->lock);
	INIT_LIST_HEAD(&vc->vmcs);
	snprintf(name, sizeof(name), "cpu-%03u", cpu);
	vc->dir = debugfs_create_dir(name, vmtool_root);
	if (IS_ERR(vc->dir)) {
		err = PTR_ERR(vc->dir);
		kmem_cache_free(vmtool_cpu_cache, vc);
		return err;
	}
	debugfs_create_file("sysregs", 0444, vc->dir, vc, &vmtool_sysregs_fops);

	vc->thread = kthread_create_on_cpu(vmtool_thread, vc, cpu, "vmtool/%u");
	if (IS_ERR(vc->thread)) {
		err = PTR_ERR(vc->thread);
		vmtool_cpu_free(vc);
		return err;
	}
	per_cpu(vmtool_cpus, cpu) = vc;
	wake_up_process(vc->thread);
	return 0;
}

/* Runs while the CPU is still online (the state is above CPUHP_AP_ONLINE_DYN's teardown point). */
static int vmtool_cpu_offline(unsigned int cpu)
{
	struct vmtool_cpu *vc = per_cpu(vmtool_cpus, cpu);

	if (!vc)
		return 0;
	per_cpu(vmtool_cpus, cpu) = NULL;
	kthread_stop(vc->thread);
	vmtool_cpu_free(vc);
	return 0;
}

/* ---------------------------------------------------------------- load / unload */

static void vmtool_destroy_caches(void)
{
	/* kmem_cache_destroy() complains loudly (and the tests fail) if an object was not freed. */
	kmem_cache_destroy(vmtool_vmcs_cache);
	kmem_cache_destroy(vmtool_cpu_cache);
}

static int __init vmtool_init(void)
{
	int ret;

	vmtool_cpu_cache = KMEM_CACHE(vmtool_cpu, 0);
	vmtool_vmcs_cache = KMEM_CACHE(vmtool_vmcs, 0);
	if (!vmtool_cpu_cache || !vmtool_vmcs_cache) {
		vmtool_destroy_caches();
		return -ENOMEM;
	}

	vmtool_root = debugfs_create_dir("vmtool", NULL);
	if (IS_ERR(vmtool_root)) {
		ret = PTR_ERR(vmtool_root);
		pr_err("cannot create the debugfs directory (%d)\n", ret);
		vmtool_destroy_caches();
		return ret;
	}

	vmtool_add_vmx_files();
	vmtool_add_svm_files();
#ifdef VMTOOL_FAKE_VMCS
	pr_warn("TEST BUILD: VMCS addresses on CPUs without VMX are invented (fake_vmcs=%u)\n", vmtool_fake_vmcs);
#endif

	ret = cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, "vmtool:online", vmtool_cpu_online, vmtool_cpu_offline);
	if (ret < 0) {
		pr_err("cannot register the CPU hot-plug state (%d)\n", ret);
		debugfs_remove(vmtool_root);
		vmtool_destroy_caches();
		return ret;
	}
	vmtool_hp_state = ret;
	pr_info("loaded: %u global files, interval_ms=%u, max_vmcs=%u\n", vmtool_nglobals, vmtool_interval_ms,
		vmtool_max_vmcs);
	return 0;
}

static void __exit vmtool_exit(void)
{
	/* Runs the offline callback on every online CPU: threads stopped, directories removed, entries freed. */
	cpuhp_remove_state(vmtool_hp_state);
	debugfs_remove(vmtool_root);
	vmtool_destroy_caches();
	pr_info("unloaded\n");
}

module_init(vmtool_init);
module_exit(vmtool_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmtool: hardware-virtualization facts and the VMCS seen on each CPU, under debugfs");
