/*
 * segment.c - create, hand out, fold and remove the segment (shm.h).
 *
 * Master side: shm_master_create() runs once, before the first fork, and
 * the master keeps its read-write mapping; the workers inherit it.  The
 * master writes only the header and, for slots whose worker is not
 * running, the slot heads; once a worker is reaped its slot's counters
 * go into the retired totals and the slot is cleared, both under the
 * header's change counter so a reader never counts a dead worker twice
 * or not at all.
 *
 * Worker side: shm_worker_attach() makes the whole mapping read-only
 * except the worker's own slot, so a stray write into another slot
 * faults instead of corrupting it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "shm.h"

static struct evshm_stats private_stats;
struct evshm_stats *shm_stats = &private_stats;

static struct evshm_hdr *seg;		/* NULL: no segment */
static size_t seg_len;
static char seg_name[NAME_MAX + 2];
static pid_t creator;			/* the process that removes it */
static struct evshm_slot *own;		/* the worker's slot */
static int atexit_done;

struct evshm_slot *
shm_own_slot(void)
{
	return own;
}

static uint64_t
now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct evshm_hdr *
shm_hdr(void)
{
	return seg;
}

const char *
shm_segment_name(void)
{
	return seg_name;
}

static int
name_ok(const char *name, char *err, size_t errlen)
{
	size_t n = strlen(name);

	if (n < 2 || name[0] != '/' || strchr(name + 1, '/') || n >= sizeof(seg->name)) {
		snprintf(err, errlen, "invalid shared memory segment name \"%s\": it must be "
		    "\"/\" followed by 1 to %d characters other than \"/\"", name,
		    (int)sizeof(seg->name) - 2);
		return -1;
	}
	return 0;
}

/*
 * The name exists.  Returns 0 after removing a segment that was left
 * behind (its master is not running), -1 (err filled) when it must stay.
 */
static int
clear_stale(const char *name, char *err, size_t errlen)
{
	struct evshm_hdr h;
	struct stat st;
	int fd;

	fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;	/* gone meanwhile */
		snprintf(err, errlen, "could not open existing shared memory segment \"%s\": %s",
		    name, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		snprintf(err, errlen, "could not stat shared memory segment \"%s\": %s", name,
		    strerror(errno));
		close(fd);
		return -1;
	}
	/*
	 * Only a segment this user could have made (ours are 0600) is ever
	 * removed: an object of another user, or one others may write, was
	 * put there by someone else (a squatter): refuse to start rather
	 * than remove or reuse it (reliability-security.md 4.4).
	 */
	if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		snprintf(err, errlen, "shared memory segment \"%s\" exists and belongs to uid %ld "
		    "with mode %04o (ours: uid %ld, mode 0600); not touching it (remove it, or "
		    "use --shm-name)", name, (long)st.st_uid, (unsigned)(st.st_mode & 07777),
		    (long)geteuid());
		close(fd);
		return -1;
	}
	/* The first 48 bytes: the same in every layout version. */
	memset(&h, 0, sizeof(h));
	if (st.st_size > 0 && pread(fd, &h, 48, 0) < 0) {
		snprintf(err, errlen, "could not read shared memory segment \"%s\": %s", name,
		    strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);

	if (h.magic[0] == '\0') {
		/* Never initialised: its creator died at once, or is at work right now. */
		if (time(NULL) - st.st_mtime < 10) {
			snprintf(err, errlen, "shared memory segment \"%s\" is being created by "
			    "another process", name);
			return -1;
		}
		log_warn("removing uninitialised shared memory segment \"%s\"", name);
	} else if (memcmp(h.magic, EVSHM_MAGIC_PREFIX, strlen(EVSHM_MAGIC_PREFIX)) != 0) {
		snprintf(err, errlen, "shared memory segment \"%s\" exists and is not an "
		    "eventodbd segment (use --shm-name)", name);
		return -1;
	} else if (shm_pid_running(h.master_pid, h.master_start_ticks)) {
		snprintf(err, errlen, "shared memory segment \"%s\" is in use by the eventodbd "
		    "master with pid %d (use --shm-name to run another instance)", name,
		    (int)h.master_pid);
		return -1;
	} else
		log_warn("removing stale shared memory segment \"%s\" of master pid %d, which "
		    "is not running", name, (int)h.master_pid);
	if (shm_unlink(name) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "could not remove stale shared memory segment \"%s\": %s",
		    name, strerror(errno));
		return -1;
	}
	return 0;
}

static void
remove_at_exit(void)
{
	shm_master_remove();
}

int
shm_master_create(const struct shm_create_opts *o, char *err, size_t errlen)
{
	char name[NAME_MAX + 2];
	/* Two per worker (generations overlap during a reload), and a spare pair. */
	uint32_t nslots = 2u * (uint32_t)(o->nworkers > 1 ? o->nworkers : 1) + 2u;
	uint64_t size = EVSHM_SEG_SIZE(nslots);
	struct evshm_hdr *h;
	int fd = -1, rc;

	if (o->name && o->name[0])
		snprintf(name, sizeof(name), "%s%s", o->name[0] == '/' ? "" : "/", o->name);
	else
		shm_default_name(o->port, name, sizeof(name));
	if (name_ok(name, err, errlen) < 0)
		return -1;

	for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
		fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd >= 0)
			break;
		if (errno != EEXIST) {
			snprintf(err, errlen, "could not create shared memory segment \"%s\": %s",
			    name, strerror(errno));
			return -1;
		}
		if (attempt == 1 || clear_stale(name, err, errlen) < 0) {
			if (attempt == 1)
				snprintf(err, errlen, "shared memory segment \"%s\" was re-created "
				    "by another process", name);
			return -1;
		}
	}
	/* Exactly 0600 whatever the umask; the segment is the daemon's business. */
	if (fchmod(fd, 0600) < 0 || ftruncate(fd, (off_t)size) < 0) {
		snprintf(err, errlen, "could not size shared memory segment \"%s\" to %llu bytes: %s",
		    name, (unsigned long long)size, strerror(errno));
		goto fail;
	}
	/*
	 * Reserve the pages every slot uses (head and counters) now, so a
	 * full /dev/shm is a start-up error rather than a SIGBUS in a worker.
	 * The profiling areas stay sparse until used.
	 */
	rc = posix_fallocate(fd, 0, (off_t)(EVSHM_PAGE + sizeof(struct evshm_stats)));
	for (uint32_t i = 0; rc == 0 && i < nslots; i++)
		rc = posix_fallocate(fd, (off_t)(EVSHM_SEG_SIZE(i)),
		    (off_t)offsetof(struct evshm_slot, cpu));
	if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
		snprintf(err, errlen, "could not reserve %llu bytes of shared memory for \"%s\": %s",
		    (unsigned long long)size, name, strerror(rc));
		goto fail;
	}
	h = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED) {
		snprintf(err, errlen, "could not map shared memory segment \"%s\": %s", name,
		    strerror(errno));
		goto fail;
	}
	close(fd);

	/* The file is new and zero-filled: set what is not zero, ready last. */
	memcpy(h->magic, EVSHM_MAGIC, 8);
	h->major = EVSHM_MAJOR;
	h->minor = EVSHM_MINOR;
	h->hdr_size = sizeof(struct evshm_hdr);
	h->seg_size = size;
	h->master_pid = (int32_t)getpid();
	h->master_start_unix_ns = now_ns(CLOCK_REALTIME);
	h->master_start_ticks = shm_proc_start_ticks(h->master_pid);
	h->slot_size = sizeof(struct evshm_slot);
	h->nslots = nslots;
	h->retired_off = EVSHM_PAGE;
	h->slots_off = EVSHM_PAGE + sizeof(struct evshm_stats);
	h->stats_size = sizeof(struct evshm_stats);
	h->nworkers = (uint32_t)o->nworkers;
	h->port = (uint32_t)o->port;
	h->counters_size = sizeof(struct evshm_counters);
	h->nhist = (uint32_t)(sizeof(struct evshm_hists) / sizeof(struct evshm_hist));
	h->hist_buckets = EVSHM_HIST_USED;
	h->flags = o->publish ? EVSHM_F_PUBLISHING : 0;
	snprintf(h->master_state, sizeof(h->master_state), "starting");
	memcpy(h->name, name, strlen(name) + 1);	/* name_ok() checked the length */
	snprintf(h->version, sizeof(h->version), "%s", o->version ? o->version : "");
	for (uint32_t i = 0; i < nslots; i++)
		EVSHM_SLOT(h, i)->hd.index = i;
	__atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);

	seg = h;
	seg_len = (size_t)size;
	snprintf(seg_name, sizeof(seg_name), "%s", name);
	creator = getpid();
	if (!atexit_done++)
		atexit(remove_at_exit);
	return 0;

fail:
	close(fd);
	shm_unlink(name);
	return -1;
}

void
shm_master_remove(void)
{
	if (!seg || getpid() != creator)
		return;
	__atomic_store_n(&seg->ready, 0, __ATOMIC_RELEASE);
	if (shm_unlink(seg_name) < 0 && errno != ENOENT)
		log_warn("could not remove shared memory segment \"%s\": %s", seg_name,
		    strerror(errno));
	munmap(seg, seg_len);
	seg = NULL;
}

void
shm_master_set_state(const char *state)
{
	if (!seg)
		return;
	evshm_write_begin(&seg->seq);
	/* Byte stores under the change counter: readers retry a torn copy. */
	for (size_t i = 0; i < sizeof(seg->master_state); i++) {
		char ch = state[0] && i < sizeof(seg->master_state) - 1 ? *state++ : '\0';
		__atomic_store_n(&seg->master_state[i], ch, __ATOMIC_RELAXED);
	}
	evshm_write_end(&seg->seq);
}

static void
set_ident(struct evshm_slot *s, int32_t pid, uint32_t gen, uint32_t worker, uint64_t fork_ns)
{
	struct evshm_slot_head *hd = &s->hd;

	evshm_write_begin(&hd->ident_seq);
	__atomic_store_n(&hd->pid, pid, __ATOMIC_RELAXED);
	__atomic_store_n(&hd->gen, gen, __ATOMIC_RELAXED);
	__atomic_store_n(&hd->worker, worker, __ATOMIC_RELAXED);
	evshm_store(&hd->fork_unix_ns, fork_ns);
	evshm_write_end(&hd->ident_seq);
}

/* Scoreboard of a slot whose worker is not running (the master is its writer then). */
static void
set_sb_empty(struct evshm_slot *s, uint32_t state)
{
	struct evshm_slot_head *hd = &s->hd;

	evshm_write_begin(&hd->sb_seq);
	__atomic_store_n(&hd->state, state, __ATOMIC_RELAXED);
	__atomic_store_n(&hd->publishing, 0, __ATOMIC_RELAXED);
	evshm_store(&hd->state_unix_ns, state == EVSHM_W_EMPTY ? 0 : now_ns(CLOCK_REALTIME));
	evshm_store(&hd->ready_unix_ns, 0);
	evshm_store(&hd->heartbeat_mono_ns, 0);
	evshm_store(&hd->heartbeat_unix_ns, 0);
	evshm_store(&hd->heartbeats, 0);
	evshm_store(&hd->loop_lag_ns, 0);
	evshm_store(&hd->oldest_req_ns, 0);
	evshm_write_end(&hd->sb_seq);
}

int
shm_master_claim(int worker, unsigned gen)
{
	if (!seg)
		return -1;
	for (uint32_t i = 0; i < seg->nslots; i++) {
		struct evshm_slot *s = EVSHM_SLOT(seg, i);
		if (s->hd.pid != 0 || s->hd.state != EVSHM_W_EMPTY)
			continue;
		set_ident(s, 0, gen, (uint32_t)worker, now_ns(CLOCK_REALTIME));
		set_sb_empty(s, EVSHM_W_FORKED);
		if (gen > seg->generation) {
			evshm_write_begin(&seg->seq);
			__atomic_store_n(&seg->generation, gen, __ATOMIC_RELAXED);
			evshm_write_end(&seg->seq);
		}
		return (int)i;
	}
	log_warn("no free shared memory slot for worker %d (gen %u): its counters are not "
	    "published", worker, gen);
	return -1;
}

void
shm_master_forked(int slot, pid_t pid)
{
	struct evshm_slot *s;

	if (!seg || slot < 0 || (uint32_t)slot >= seg->nslots)
		return;
	s = EVSHM_SLOT(seg, slot);
	set_ident(s, (int32_t)pid, s->hd.gen, s->hd.worker, s->hd.fork_unix_ns);
}

static void
clear_slot(struct evshm_slot *s)
{
	struct evshm_slot_head *hd = &s->hd;
	uint64_t *w = (uint64_t *)(void *)&s->stats;

	set_ident(s, 0, 0, 0, 0);
	set_sb_empty(s, EVSHM_W_EMPTY);
	for (size_t i = 0; i < sizeof(s->stats) / sizeof(uint64_t); i++)
		if (w[i])
			evshm_store(&w[i], 0);
	hd->panic_len = 0;
	hd->panic_signo = 0;
	hd->panic[0] = '\0';
	/* Profiling areas: clear only what was used (untouched pages stay unallocated). */
	if (hd->prof.cpu_head)
		memset(s->cpu, 0, sizeof(s->cpu));
	if (hd->prof.alloc_used)
		memset(s->alloc, 0, sizeof(s->alloc));
	memset(&hd->prof, 0, sizeof(hd->prof));
}

void
shm_master_unclaim(int slot)
{
	if (!seg || slot < 0 || (uint32_t)slot >= seg->nslots)
		return;
	clear_slot(EVSHM_SLOT(seg, slot));
}

/* Add a dead worker's counters (not its gauges) and histograms to the retired totals. */
static void
fold(struct evshm_stats *r, const struct evshm_stats *s)
{
	for (unsigned k = 0; k < shm_ncounters; k++) {
		const struct shm_counter_meta *m = &shm_counters[k];
		if (m->kind != SHM_COUNTER)
			continue;
		for (unsigned i = 0; i < shm_dims[m->dim].max; i++)
			evshm_add(&r->c_raw[m->word + i], evshm_load(&s->c_raw[m->word + i]));
	}
	for (unsigned k = 0; k < shm_nhists; k++) {
		const struct shm_hist_meta *m = &shm_hists[k];
		for (unsigned i = 0; i < shm_dims[m->dim].max; i++) {
			const struct evshm_hist *sh = &s->h_raw[m->first + i];
			struct evshm_hist *rh = &r->h_raw[m->first + i];
			if (evshm_load(&sh->count) == 0)
				continue;
			evshm_add(&rh->count, evshm_load(&sh->count));
			evshm_add(&rh->sum_ns, evshm_load(&sh->sum_ns));
			for (unsigned b = 0; b < EVSHM_HIST_USED; b++)
				evshm_add(&rh->bucket[b], evshm_load(&sh->bucket[b]));
		}
	}
}

void
shm_master_reaped(pid_t pid)
{
	struct evshm_slot *s = NULL;
	struct evshm_slot_head *hd;

	if (!seg || pid <= 0)
		return;
	for (uint32_t i = 0; i < seg->nslots; i++)
		if (EVSHM_SLOT(seg, i)->hd.pid == (int32_t)pid) {
			s = EVSHM_SLOT(seg, i);
			break;
		}
	if (!s)
		return;
	hd = &s->hd;
	if (hd->panic_len) {
		uint32_t n = hd->panic_len < EVSHM_PANIC_SIZE ? hd->panic_len : EVSHM_PANIC_SIZE - 1;
		log_error("worker %u crash report (pid %d, gen %u, signal %d): %.*s", hd->worker,
		    (int)pid, hd->gen, hd->panic_signo, (int)n, hd->panic);
	}
	evshm_write_begin(&seg->seq);
	fold(EVSHM_RETIRED(seg), &s->stats);
	evshm_add(&seg->retired_workers, 1);
	clear_slot(s);
	evshm_write_end(&seg->seq);
}

/* ---- worker --------------------------------------------------------------- */

void
shm_worker_attach(int slot)
{
	long page = sysconf(_SC_PAGESIZE);
	struct evshm_slot *s;

	if (!seg || slot < 0 || (uint32_t)slot >= seg->nslots)
		return;
	s = EVSHM_SLOT(seg, slot);
	own = s;
	/* Only the own slot stays writable (slots are page-aligned for this). */
	if (page > 0 && (seg->slots_off % (uint64_t)page) == 0 &&
	    (seg->slot_size % (uint64_t)page) == 0) {
		if (mprotect(seg, seg_len, PROT_READ) < 0 ||
		    mprotect(s, seg->slot_size, PROT_READ | PROT_WRITE) < 0)
			log_warn("could not write-protect the shared memory segment: %s",
			    strerror(errno));
	}
	if (seg->flags & EVSHM_F_PUBLISHING)
		shm_stats = &s->stats;
	evshm_write_begin(&s->hd.sb_seq);
	__atomic_store_n(&s->hd.publishing, (seg->flags & EVSHM_F_PUBLISHING) ? 1u : 0u,
	    __ATOMIC_RELAXED);
	evshm_write_end(&s->hd.sb_seq);
}

void
shm_worker_state(enum evshm_wstate state)
{
	struct evshm_slot_head *hd;
	uint64_t now;

	if (!own)
		return;
	hd = &own->hd;
	now = now_ns(CLOCK_REALTIME);
	evshm_write_begin(&hd->sb_seq);
	__atomic_store_n(&hd->state, (uint32_t)state, __ATOMIC_RELAXED);
	evshm_store(&hd->state_unix_ns, now);
	if (state == EVSHM_W_READY)
		evshm_store(&hd->ready_unix_ns, now);
	evshm_write_end(&hd->sb_seq);
}

void
shm_worker_heartbeat(uint64_t lag_ns, uint64_t oldest_req_ns)
{
	struct evshm_slot_head *hd;

	if (!own)
		return;
	hd = &own->hd;
	evshm_write_begin(&hd->sb_seq);
	evshm_store(&hd->heartbeat_mono_ns, now_ns(CLOCK_MONOTONIC));
	evshm_store(&hd->heartbeat_unix_ns, now_ns(CLOCK_REALTIME));
	evshm_add(&hd->heartbeats, 1);
	evshm_store(&hd->loop_lag_ns, lag_ns);
	evshm_store(&hd->oldest_req_ns, oldest_req_ns);
	evshm_write_end(&hd->sb_seq);
}
