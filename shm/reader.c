/*
 * reader.c - attach to a segment read-only and copy it (reader.h).
 *
 * A snapshot copies the header fields, the retired totals and every slot
 * in use, then checks that the master did not fold a dead worker in the
 * meantime (the header's change counter); if it did, the whole copy is
 * repeated, so a worker's counters are never counted twice or lost
 * while it is being retired.  Each histogram, identity and scoreboard is
 * copied under its own change counter.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "access.h"
#include "meta.h"
#include "reader.h"

/* Give up on a consistent copy after this long (the master folds in microseconds). */
#define SNAP_DEADLINE_NS	(2 * 1000000000ull)

uint64_t
shm_now_ns(int monotonic)
{
	struct timespec ts;
	clock_gettime(monotonic ? CLOCK_MONOTONIC : CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t
cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

enum shm_attach
shm_reader_open(struct shm_reader *r, const char *name, double wait_s, char *err,
    size_t errlen)
{
	uint64_t deadline = shm_now_ns(1) + (uint64_t)(wait_s * 1e9);
	const struct evshm_hdr *h;
	struct stat st;
	void *p;
	int fd;

	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0) {
		if (errno == ENOENT) {
			snprintf(err, errlen, "no eventodbd instance: shared memory segment \"%s\" "
			    "does not exist", name);
			return SHM_GONE;
		}
		if (errno == EACCES) {
			snprintf(err, errlen, "could not open shared memory segment \"%s\": permission "
			    "denied (run evdump as the user eventodbd runs as)", name);
			return SHM_ERROR;
		}
		snprintf(err, errlen, "could not open shared memory segment \"%s\": %s", name,
		    strerror(errno));
		return SHM_ERROR;
	}
	for (;;) {
		if (fstat(fd, &st) < 0) {
			snprintf(err, errlen, "could not stat shared memory segment \"%s\": %s", name,
			    strerror(errno));
			close(fd);
			return SHM_ERROR;
		}
		if ((size_t)st.st_size >= sizeof(struct evshm_hdr))
			break;
		if (st.st_size >= 8) {
			/* Too small for any header we know: look at the marker first. */
			char m[8];
			if (pread(fd, m, 8, 0) == 8 && m[0] &&
			    memcmp(m, EVSHM_MAGIC_PREFIX, strlen(EVSHM_MAGIC_PREFIX)) != 0) {
				snprintf(err, errlen, "\"%s\" is not an eventodbd shared memory segment",
				    name);
				close(fd);
				return SHM_FOREIGN;
			}
		}
		if (shm_now_ns(1) >= deadline) {
			snprintf(err, errlen, "shared memory segment \"%s\" is not ready (being "
			    "created, or its creator died)", name);
			close(fd);
			return SHM_NOT_READY;
		}
		sleep_ms(10);
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		snprintf(err, errlen, "could not map shared memory segment \"%s\": %s", name,
		    strerror(errno));
		return SHM_ERROR;
	}
	h = p;
	r->hdr = h;
	r->size = (size_t)st.st_size;
	r->owned = 1;

	if (h->magic[0] && memcmp(h->magic, EVSHM_MAGIC_PREFIX, strlen(EVSHM_MAGIC_PREFIX)) != 0) {
		snprintf(err, errlen, "\"%s\" is not an eventodbd shared memory segment", name);
		shm_reader_close(r);
		return SHM_FOREIGN;
	}
	/* Wait for ready (release-stored last by the master) before trusting anything. */
	while (!__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE)) {
		if (shm_now_ns(1) >= deadline) {
			if (h->magic[0])
				snprintf(err, errlen, "shared memory segment \"%s\" is not ready (master "
				    "pid %d is still setting it up, or is shutting down)", name,
				    (int)h->master_pid);
			else
				snprintf(err, errlen, "shared memory segment \"%s\" is not ready (being "
				    "created, or its creator died)", name);
			r->major = h->major;
			r->minor = h->minor;
			shm_reader_close(r);
			return SHM_NOT_READY;
		}
		sleep_ms(10);
	}
	r->major = h->major;
	r->minor = h->minor;
	if (memcmp(h->magic, EVSHM_MAGIC, 8) != 0 || h->major != EVSHM_MAJOR) {
		snprintf(err, errlen, "shared memory segment \"%s\" has layout version %u.%u "
		    "(marker \"%.8s\"); this program reads layout %d.x: use the evdump of the same "
		    "eventodbd release", name, h->major, h->minor, h->magic, EVSHM_MAJOR);
		shm_reader_close(r);
		return SHM_BAD_VERSION;
	}
	if (h->hdr_size != sizeof(struct evshm_hdr) || h->seg_size != (uint64_t)st.st_size ||
	    h->slot_size != sizeof(struct evshm_slot) ||
	    h->stats_size != sizeof(struct evshm_stats) ||
	    h->retired_off + sizeof(struct evshm_stats) > h->seg_size ||
	    h->slots_off + (uint64_t)h->nslots * h->slot_size > h->seg_size) {
		snprintf(err, errlen, "shared memory segment \"%s\" is inconsistent (sizes do not "
		    "match layout %u.%u)", name, h->major, h->minor);
		shm_reader_close(r);
		return SHM_FOREIGN;
	}
	return SHM_ATTACHED;
}

void
shm_reader_from_base(struct shm_reader *r, const void *base)
{
	const struct evshm_hdr *h = base;

	memset(r, 0, sizeof(*r));
	r->hdr = h;
	r->size = (size_t)h->seg_size;
	r->major = h->major;
	r->minor = h->minor;
	snprintf(r->name, sizeof(r->name), "%s", h->name);
}

void
shm_reader_close(struct shm_reader *r)
{
	if (r->owned && r->hdr)
		munmap((void *)(uintptr_t)r->hdr, r->size);
	r->hdr = NULL;
	r->owned = 0;
}

/* ---- copying ---------------------------------------------------------------- */

/*
 * Copy one histogram; returns 1 if it is in use.  `clean`: dst is known
 * to be zero already (fresh memory), so an empty histogram is not even
 * written - a snapshot then touches only the pages of histograms in use.
 */
static int
copy_hist(struct shm_snap *s, struct evshm_hist *dst, const struct evshm_hist *src, int clean)
{
	for (int attempt = 0; attempt < EVSHM_READ_RETRIES; attempt++) {
		uint64_t seq = evshm_read_begin(&src->seq);
		if (!(seq & 1) && evshm_load(&src->count) == 0) {
			if (!evshm_read_retry(&src->seq, seq)) {
				if (!clean)
					memset(dst, 0, sizeof(*dst));
				return 0;
			}
		} else {
			evshm_copy((uint64_t *)dst, (const uint64_t *)src, sizeof(*dst) / 8);
			if (!evshm_read_retry(&src->seq, seq))
				return 1;
			clean = 0;
		}
		s->retries++;
		evshm_backoff(attempt);
	}
	s->torn++;
	return 1;
}

/* Returns the mask of histograms in use (bit i: h_raw[i]). */
static uint32_t
copy_stats(struct shm_snap *s, struct evshm_stats *dst, const struct evshm_stats *src, int clean)
{
	uint32_t used = 0;

	evshm_copy(dst->c_raw, src->c_raw, EVSHM_COUNTERS_AREA / 8);
	for (unsigned k = 0; k < shm_nhists; k++) {
		const struct shm_hist_meta *m = &shm_hists[k];
		for (unsigned i = 0; i < shm_dims[m->dim].max; i++)
			if (copy_hist(s, &dst->h_raw[m->first + i], &src->h_raw[m->first + i], clean))
				used |= (uint32_t)1 << (m->first + i);
	}
	return used;
}

/* Identity and scoreboard of slot i; returns 1 if the slot is in use. */
static int
copy_head(struct shm_snap *s, struct shm_snap_slot *d, const struct evshm_slot_head *hd)
{
	int ok = 0;

	for (int attempt = 0; attempt < EVSHM_READ_RETRIES && !ok; attempt++) {
		uint64_t seq = evshm_read_begin(&hd->ident_seq);
		d->pid = __atomic_load_n(&hd->pid, __ATOMIC_RELAXED);
		d->gen = __atomic_load_n(&hd->gen, __ATOMIC_RELAXED);
		d->worker = __atomic_load_n(&hd->worker, __ATOMIC_RELAXED);
		d->fork_unix_ns = evshm_load(&hd->fork_unix_ns);
		ok = !evshm_read_retry(&hd->ident_seq, seq);
		if (!ok) {
			s->retries++;
			evshm_backoff(attempt);
		}
	}
	if (!ok)
		s->torn++;
	ok = 0;
	for (int attempt = 0; attempt < EVSHM_READ_RETRIES && !ok; attempt++) {
		uint64_t seq = evshm_read_begin(&hd->sb_seq);
		d->state = __atomic_load_n(&hd->state, __ATOMIC_RELAXED);
		d->publishing = __atomic_load_n(&hd->publishing, __ATOMIC_RELAXED);
		d->state_unix_ns = evshm_load(&hd->state_unix_ns);
		d->ready_unix_ns = evshm_load(&hd->ready_unix_ns);
		d->heartbeat_mono_ns = evshm_load(&hd->heartbeat_mono_ns);
		d->heartbeat_unix_ns = evshm_load(&hd->heartbeat_unix_ns);
		d->heartbeats = evshm_load(&hd->heartbeats);
		d->loop_lag_ns = evshm_load(&hd->loop_lag_ns);
		d->oldest_req_ns = evshm_load(&hd->oldest_req_ns);
		ok = !evshm_read_retry(&hd->sb_seq, seq);
		if (!ok) {
			s->retries++;
			evshm_backoff(attempt);
		}
	}
	if (!ok)
		s->torn++;
	return d->pid != 0 || d->state != EVSHM_W_EMPTY;
}

static void
copy_str(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	dst[n - 1] = '\0';	/* whatever the writer did, ours ends in NUL */
}

int
shm_snap_take(const struct shm_reader *r, struct shm_snap *s)
{
	const struct evshm_hdr *h = r->hdr;
	uint64_t t0 = shm_now_ns(1), c0 = cpu_ns();
	int done = 0;

	/* Fresh (zeroed) memory is left untouched where nothing is in use. */
	if (s->used_before)
		memset(s, 0, sizeof(*s));
	s->used_before = 1;
	s->slots = calloc(h->nslots ? h->nslots : 1, sizeof(*s->slots));
	if (!s->slots)
		return -1;
	for (int attempt = 0; !done; attempt++) {
		uint64_t seq = evshm_read_begin(&h->seq);

		if (attempt > 0 && shm_now_ns(1) - t0 > SNAP_DEADLINE_NS)
			break;
		if (seq & 1) {
			/* The master is folding a dead worker: a few microseconds. */
			struct timespec ts = { 0, 20000 };
			s->retries++;
			nanosleep(&ts, NULL);
			continue;
		}
		copy_str(s->name, h->name, sizeof(s->name));
		copy_str(s->version, h->version, sizeof(s->version));
		copy_str(s->master_state, h->master_state, sizeof(s->master_state));
		s->major = h->major;
		s->minor = h->minor;
		s->master_pid = h->master_pid;
		s->master_start_unix_ns = h->master_start_unix_ns;
		s->nworkers = h->nworkers;
		s->generation = __atomic_load_n(&h->generation, __ATOMIC_RELAXED);
		s->port = h->port;
		s->nslots = h->nslots;
		s->flags = h->flags;
		s->retired_workers = evshm_load(&h->retired_workers);
		s->retired_hists = copy_stats(s, &s->retired, (const struct evshm_stats *)
		    (const void *)((const char *)h + h->retired_off), attempt == 0);
		s->nused = 0;
		for (uint32_t i = 0; i < h->nslots; i++) {
			const struct evshm_slot *sl = (const struct evshm_slot *)(const void *)
			    ((const char *)h + h->slots_off + (size_t)i * h->slot_size);
			struct shm_snap_slot *d = &s->slots[s->nused];
			if (!copy_head(s, d, &sl->hd))
				continue;
			d->index = i;
			d->hists = copy_stats(s, &d->stats, &sl->stats, attempt == 0);
			s->nused++;
		}
		done = !evshm_read_retry(&h->seq, seq);
		if (!done)
			s->retries++;
	}
	if (!done)
		s->torn++;
	s->taken_unix_ns = shm_now_ns(0);
	s->taken_mono_ns = shm_now_ns(1);

	shm_stats_add(&s->total, &s->retired, s->retired_hists);
	for (unsigned i = 0; i < s->nused; i++)
		shm_stats_add(&s->total, &s->slots[i].stats, s->slots[i].hists);
	s->master_alive = shm_pid_running(s->master_pid, h->master_start_ticks);
	for (unsigned i = 0; i < s->nused; i++)
		s->slots[i].alive = shm_pid_running(s->slots[i].pid, 0);
	s->took_ns = shm_now_ns(1) - t0;
	s->took_cpu_ns = cpu_ns() - c0;
	return 0;
}

void
shm_snap_free(struct shm_snap *s)
{
	free(s->slots);
	s->slots = NULL;
	s->nused = 0;
}

void
shm_stats_add(struct evshm_stats *dst, const struct evshm_stats *src, uint32_t hists)
{
	for (unsigned i = 0; i < EVSHM_COUNTERS_AREA / 8; i++)
		dst->c_raw[i] += src->c_raw[i];
	for (unsigned k = 0; k < shm_nhists; k++) {
		const struct shm_hist_meta *m = &shm_hists[k];
		for (unsigned i = 0; i < shm_dims[m->dim].max; i++) {
			const struct evshm_hist *sh = &src->h_raw[m->first + i];
			struct evshm_hist *dh = &dst->h_raw[m->first + i];
			if (!(hists & ((uint32_t)1 << (m->first + i))) || sh->count == 0)
				continue;
			dh->count += sh->count;
			dh->sum_ns += sh->sum_ns;
			for (unsigned b = 0; b < EVSHM_HIST_USED; b++)
				dh->bucket[b] += sh->bucket[b];
		}
	}
}
