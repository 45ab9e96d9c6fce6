/*
 * panic.c - a worker's crash report, written into its slot.
 *
 * On SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT the handler formats the
 * signal, the fault address and a backtrace into the slot's panic buffer
 * with async-signal-safe code only (no stdio, no malloc), then lets the
 * signal kill the process.  The master logs the buffer after waitpid()
 * (shm_master_reaped), so the report survives in the log even though
 * the worker could not write it there itself.
 *
 * Backtrace frames are printed as module+offset ("eventodbd+0x1a2b"),
 * from a table of loaded objects taken at install time, so
 * `addr2line -f -e eventodbd 0x1a2b` names the function.  backtrace()
 * is called once at install time so that it loads libgcc before any
 * crash (its first call may allocate).
 */
#include "config.h"

#include <execinfo.h>
#include <link.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shm.h"

#define MAX_MODULES	48
#define MAX_FRAMES	40
#define ALTSTACK_SIZE	(64 * 1024)

struct module {
	uintptr_t	 base;		/* load bias (dlpi_addr) */
	uintptr_t	 lo, hi;	/* executable segment */
	char		 name[48];	/* basename */
};

static struct module modules[MAX_MODULES];
static int nmodules;

static const struct {
	int		 signo;
	const char	*name;
} fatal[] = {
	{ SIGSEGV, "SIGSEGV" }, { SIGBUS, "SIGBUS" }, { SIGILL, "SIGILL" },
	{ SIGFPE, "SIGFPE" }, { SIGABRT, "SIGABRT" },
};

/* ---- async-signal-safe formatting ---------------------------------------- */

struct out {
	char	*p;
	size_t	 len, cap;
};

static void
put(struct out *o, const char *s)
{
	while (*s && o->len + 1 < o->cap)
		o->p[o->len++] = *s++;
	o->p[o->len] = '\0';
}

static void
put_num(struct out *o, uint64_t v, unsigned base)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v && n < (int)sizeof(tmp));
	if (base == 16)
		put(o, "0x");
	while (n > 0 && o->len + 1 < o->cap) {
		o->p[o->len++] = tmp[--n];
		o->p[o->len] = '\0';
	}
}

static void
put_pc(struct out *o, uintptr_t pc)
{
	for (int i = 0; i < nmodules; i++)
		if (pc >= modules[i].lo && pc < modules[i].hi) {
			put(o, modules[i].name);
			put(o, "+");
			put_num(o, pc - modules[i].base, 16);
			return;
		}
	put_num(o, pc, 16);
}

static void
handler(int sig, siginfo_t *si, void *uc)
{
	struct evshm_slot *s = shm_own_slot();
	char local[EVSHM_PANIC_SIZE];
	struct out o = { s ? s->hd.panic : local, 0, EVSHM_PANIC_SIZE };
	void *frames[MAX_FRAMES];
	const char *name = "signal";
	int n;

	for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
		if (fatal[i].signo == sig)
			name = fatal[i].name;
	o.p[0] = '\0';
	put(&o, name);
	if (si->si_code <= 0) {
		/* kill(), sigqueue(), tkill(): no fault address, a sender */
		put(&o, " sent by pid ");
		put_num(&o, (uint64_t)si->si_pid, 10);
	} else if (sig != SIGABRT) {
		put(&o, " at address ");
		put_num(&o, (uintptr_t)si->si_addr, 16);
	}
	put(&o, "; backtrace:");
	n = backtrace(frames, MAX_FRAMES);
	/* Skip this handler's own frame. */
	for (int i = 1; i < n; i++) {
		put(&o, " ");
		put_pc(&o, (uintptr_t)frames[i]);
	}
	if (s) {
		s->hd.panic_signo = sig;
		__atomic_store_n(&s->hd.panic_len, (uint32_t)o.len, __ATOMIC_RELEASE);
	} else {
		(void)!write(2, "worker crashed: ", 16);
		(void)!write(2, o.p, o.len);
		(void)!write(2, "\n", 1);
	}
	/* SA_RESETHAND restored the default action: die of the same signal. */
	raise(sig);
}

static int
add_module(struct dl_phdr_info *info, size_t size, void *arg)
{
	const char *path = info->dlpi_name, *base;
	struct module *m;

	if (nmodules >= MAX_MODULES)
		return 1;
	if (!path || !path[0])
		path = arg;	/* the executable itself */
	base = strrchr(path, '/');
	base = base ? base + 1 : path;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		m = &modules[nmodules++];
		m->base = info->dlpi_addr;
		m->lo = info->dlpi_addr + ph->p_vaddr;
		m->hi = m->lo + ph->p_memsz;
		strncpy(m->name, base, sizeof(m->name) - 1);
		m->name[sizeof(m->name) - 1] = '\0';
		if (nmodules >= MAX_MODULES)
			return 1;
	}
	return 0;
}

/*
 * The one-time part: backtrace()'s first call loads libgcc's unwinder
 * (a dlopen, relocations, page faults) and the module table walks every
 * loaded object.  The master does it once before forking (workers
 * inherit both), so a replacement worker does not pay ~1 ms of CPU for it
 * on its way to accepting.
 */
void
shm_panic_prepare(void)
{
	static int prepared;
	void *warm[2];

	if (prepared)
		return;
	backtrace(warm, 2);
	nmodules = 0;
	dl_iterate_phdr(add_module, (void *)"eventodbd");
	prepared = 1;
}

void
shm_panic_install(void)
{
	static char *altstack;
	struct sigaction sa;
	stack_t ss;

	shm_panic_prepare();
	if (!altstack)
		altstack = malloc(ALTSTACK_SIZE);
	if (altstack) {
		/* A stack overflow must still be reported: handle on a stack of our own. */
		ss.ss_sp = altstack;
		ss.ss_size = ALTSTACK_SIZE;
		ss.ss_flags = 0;
		sigaltstack(&ss, NULL);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
		sigaction(fatal[i].signo, &sa, NULL);
}
