/*
 * evdump_json.c - evdump's JSON documents.
 *
 *   evdump-snapshot  everything a snapshot holds: the instance, totals
 *                    (retired workers included) and each worker slot,
 *                    counters by name and label, histograms with their
 *                    percentiles and non-empty buckets.  `evdump diff`
 *                    reads it back, so a file written by one evdump can
 *                    be compared by another of the same layout major.
 *   evdump-rates     the difference of two snapshots per second.
 *   evdump-layout    sizes and offsets (pinned by t/70-shm.t).
 *
 * Counters labelled by a set are objects {label: value} holding every
 * label this build knows; histograms appear only when non-empty.
 * Durations are integers in nanoseconds (suffix _ns), times are Unix
 * seconds with a fraction (suffix _unix).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "evdump.h"
#include "meta.h"

/* ---- a small JSON writer ------------------------------------------------------ */

struct jw {
	FILE	*f;
	int	 depth;
	int	 first[32];
};

static void
jw_sep(struct jw *w, const char *key)
{
	if (w->depth > 0) {
		if (!w->first[w->depth])
			fputc(',', w->f);
		w->first[w->depth] = 0;
		fputc('\n', w->f);
		for (int i = 0; i < w->depth; i++)
			fputc(' ', w->f);
	}
	if (key) {
		fputc('"', w->f);
		for (const char *p = key; *p; p++) {
			if (*p == '"' || *p == '\\')
				fputc('\\', w->f);
			fputc(*p, w->f);
		}
		fputs("\":", w->f);
	}
}

static void
jw_open(struct jw *w, const char *key, char ch)
{
	jw_sep(w, key);
	fputc(ch, w->f);
	w->depth++;
	w->first[w->depth] = 1;
}

static void
jw_close(struct jw *w, char ch)
{
	int empty = w->first[w->depth];

	w->depth--;
	if (!empty) {
		fputc('\n', w->f);
		for (int i = 0; i < w->depth; i++)
			fputc(' ', w->f);
	}
	fputc(ch, w->f);
	if (w->depth == 0)
		fputc('\n', w->f);
}

static void
jw_u64(struct jw *w, const char *key, uint64_t v)
{
	jw_sep(w, key);
	fprintf(w->f, "%llu", (unsigned long long)v);
}

static void
jw_i64(struct jw *w, const char *key, int64_t v)
{
	jw_sep(w, key);
	fprintf(w->f, "%lld", (long long)v);
}

static void
jw_dbl(struct jw *w, const char *key, double v)
{
	jw_sep(w, key);
	fprintf(w->f, "%.6f", v);
}

static void
jw_bool(struct jw *w, const char *key, int v)
{
	jw_sep(w, key);
	fputs(v ? "true" : "false", w->f);
}

static void
jw_str(struct jw *w, const char *key, const char *s)
{
	jw_sep(w, key);
	fputc('"', w->f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(w->f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(w->f, "\\u%04x", ch);
		else
			fputc(ch, w->f);
	}
	fputc('"', w->f);
}

static double
unix_s(uint64_t ns)
{
	return (double)ns / 1e9;
}

/* ---- snapshot ------------------------------------------------------------------ */

static void
json_hist(struct jw *w, const char *key, const struct evshm_hist *h, int buckets)
{
	jw_open(w, key, '{');
	jw_u64(w, "count", h->count);
	jw_u64(w, "sum_ns", h->sum_ns);
	jw_u64(w, "mean_ns", h->count ? h->sum_ns / h->count : 0);
	jw_u64(w, "p50_ns", (uint64_t)evd_pct(h, 0.5));
	jw_u64(w, "p90_ns", (uint64_t)evd_pct(h, 0.9));
	jw_u64(w, "p99_ns", (uint64_t)evd_pct(h, 0.99));
	jw_u64(w, "p999_ns", (uint64_t)evd_pct(h, 0.999));
	jw_u64(w, "max_ns", shm_hist_max_ns(h));
	if (buckets) {
		/* [index, upper bound in ns (0: overflow), count] of the non-empty buckets */
		jw_open(w, "buckets", '[');
		for (unsigned i = 0; i < EVSHM_HIST_USED; i++) {
			uint64_t up = shm_hist_upper_ns(i);
			if (!h->bucket[i])
				continue;
			jw_sep(w, NULL);
			fprintf(w->f, "[%u,%llu,%llu]", i, (unsigned long long)(up == UINT64_MAX ? 0 : up),
			    (unsigned long long)h->bucket[i]);
		}
		jw_close(w, ']');
	}
	jw_close(w, '}');
}

/*
 * counters: {"name": value | {"label": value}}; gauges as signed values.
 * rates: when dt > 0, counters are divided by dt (gauges are not).
 */
static void
json_counters(struct jw *w, const struct evshm_stats *st, double dt)
{
	jw_open(w, "counters", '{');
	for (unsigned k = 0; k < shm_ncounters; k++) {
		const struct shm_counter_meta *m = &shm_counters[k];
		char lb[24];
		if (m->dim != SHM_DIM_none)
			jw_open(w, m->name, '{');
		for (unsigned l = 0; l < shm_dims[m->dim].max; l++) {
			uint64_t v = st->c_raw[m->word + l];
			const char *key = m->dim == SHM_DIM_none ? m->name : shm_label(m->dim, l, lb, sizeof(lb));
			if (l >= shm_dims[m->dim].n && v == 0)
				continue;
			if (m->kind == SHM_GAUGE)
				jw_i64(w, key, (int64_t)v);
			else if (dt > 0)
				jw_dbl(w, key, (double)v / dt);
			else
				jw_u64(w, key, v);
		}
		if (m->dim != SHM_DIM_none)
			jw_close(w, '}');
	}
	jw_close(w, '}');
}

static void
json_hists(struct jw *w, const char *key, const struct evshm_stats *st, int buckets)
{
	jw_open(w, key, '{');
	for (unsigned k = 0; k < shm_nhists; k++) {
		const struct shm_hist_meta *m = &shm_hists[k];
		int any = 0;
		char lb[24];
		for (unsigned l = 0; l < shm_dims[m->dim].max; l++)
			if (st->h_raw[m->first + l].count)
				any = 1;
		if (!any)
			continue;
		if (m->dim == SHM_DIM_none) {
			json_hist(w, m->name, &st->h_raw[m->first], buckets);
			continue;
		}
		jw_open(w, m->name, '{');
		for (unsigned l = 0; l < shm_dims[m->dim].max; l++)
			if (st->h_raw[m->first + l].count)
				json_hist(w, shm_label(m->dim, l, lb, sizeof(lb)), &st->h_raw[m->first + l],
				    buckets);
		jw_close(w, '}');
	}
	jw_close(w, '}');
}

static void
json_master(struct jw *w, const struct shm_snap *s)
{
	jw_open(w, "master", '{');
	jw_i64(w, "pid", s->master_pid);
	jw_bool(w, "alive", s->master_alive);
	jw_str(w, "state", s->master_state);
	jw_dbl(w, "start_unix", unix_s(s->master_start_unix_ns));
	jw_u64(w, "generation", s->generation);
	jw_str(w, "version", s->version);
	jw_u64(w, "port", s->port);
	jw_u64(w, "workers", s->nworkers);
	jw_u64(w, "retired_workers", s->retired_workers);
	jw_bool(w, "publishing", (s->flags & EVSHM_F_PUBLISHING) != 0);
	jw_close(w, '}');
}

static void
json_slot_ident(struct jw *w, const struct shm_snap_slot *sl)
{
	jw_u64(w, "slot", sl->index);
	jw_u64(w, "worker", sl->worker);
	jw_i64(w, "pid", sl->pid);
	jw_u64(w, "generation", sl->gen);
}

void
evd_json_snapshot(FILE *out, const struct shm_snap *s)
{
	struct jw w = { out, 0, { 0 } };
	char layout[16];

	snprintf(layout, sizeof(layout), "%u.%u", s->major, s->minor);
	jw_open(&w, NULL, '{');
	jw_str(&w, "format", "evdump-snapshot");
	jw_u64(&w, "format_version", 1);
	jw_str(&w, "segment", s->name);
	jw_str(&w, "layout", layout);
	jw_dbl(&w, "taken_unix", unix_s(s->taken_unix_ns));
	jw_u64(&w, "taken_mono_ns", s->taken_mono_ns);
	jw_u64(&w, "snapshot_ns", s->took_ns);
	jw_u64(&w, "snapshot_cpu_ns", s->took_cpu_ns);
	jw_u64(&w, "retries", s->retries);
	jw_u64(&w, "torn", s->torn);
	json_master(&w, s);
	jw_open(&w, "totals", '{');
	json_counters(&w, &s->total, 0);
	json_hists(&w, "histograms", &s->total, 1);
	jw_close(&w, '}');
	jw_open(&w, "workers", '[');
	for (unsigned i = 0; i < s->nused; i++) {
		const struct shm_snap_slot *sl = &s->slots[i];
		jw_open(&w, NULL, '{');
		json_slot_ident(&w, sl);
		jw_bool(&w, "alive", sl->alive);
		jw_str(&w, "state", shm_wstate_name(sl->state));
		jw_bool(&w, "publishing", sl->publishing != 0);
		jw_dbl(&w, "fork_unix", unix_s(sl->fork_unix_ns));
		jw_dbl(&w, "state_unix", unix_s(sl->state_unix_ns));
		jw_dbl(&w, "ready_unix", unix_s(sl->ready_unix_ns));
		jw_dbl(&w, "heartbeat_unix", unix_s(sl->heartbeat_unix_ns));
		jw_u64(&w, "heartbeat_mono_ns", sl->heartbeat_mono_ns);
		jw_u64(&w, "heartbeats", sl->heartbeats);
		jw_u64(&w, "loop_lag_ns", sl->loop_lag_ns);
		jw_u64(&w, "oldest_request_ns", sl->oldest_req_ns);
		json_counters(&w, &sl->stats, 0);
		json_hists(&w, "histograms", &sl->stats, 1);
		jw_close(&w, '}');
	}
	jw_close(&w, ']');
	jw_close(&w, '}');
}

void
evd_json_rates(FILE *out, const struct evd_rates *r)
{
	struct jw w = { out, 0, { 0 } };
	const struct shm_snap *a = r->a, *b = r->b;

	jw_open(&w, NULL, '{');
	jw_str(&w, "format", "evdump-rates");
	jw_u64(&w, "format_version", 1);
	jw_str(&w, "segment", b->name);
	jw_dbl(&w, "from_unix", unix_s(a->taken_unix_ns));
	jw_dbl(&w, "to_unix", unix_s(b->taken_unix_ns));
	jw_dbl(&w, "interval_s", r->dt);
	jw_u64(&w, "workers_retired", b->retired_workers - a->retired_workers);
	json_master(&w, b);
	jw_open(&w, "totals", '{');
	/* counters per second, gauges as now; latency of the interval */
	json_counters(&w, &r->delta, r->dt);
	json_hists(&w, "latency", &r->delta, 0);
	jw_close(&w, '}');
	jw_open(&w, "workers", '[');
	for (unsigned i = 0; i < b->nused; i++) {
		const struct shm_snap_slot *sl = &b->slots[i];
		static struct evshm_stats d;
		jw_open(&w, NULL, '{');
		json_slot_ident(&w, sl);
		jw_bool(&w, "new", r->prev[i] < 0);
		if (r->prev[i] >= 0) {
			const struct evshm_stats *sa = &a->slots[r->prev[i]].stats;
			for (unsigned k = 0; k < shm_ncounters; k++) {
				const struct shm_counter_meta *m = &shm_counters[k];
				for (unsigned l = 0; l < shm_dims[m->dim].max; l++) {
					unsigned wd = m->word + l;
					uint64_t vb = sl->stats.c_raw[wd], va = sa->c_raw[wd];
					d.c_raw[wd] = m->kind == SHM_GAUGE ? vb : vb >= va ? vb - va : 0;
				}
			}
			json_counters(&w, &d, r->dt);
		}
		jw_close(&w, '}');
	}
	jw_close(&w, ']');
	jw_close(&w, '}');
}

void
evd_json_layout(FILE *out)
{
	struct jw w = { out, 0, { 0 } };
	char v[16];

	snprintf(v, sizeof(v), "%d.%d", EVSHM_MAJOR, EVSHM_MINOR);
	jw_open(&w, NULL, '{');
	jw_str(&w, "format", "evdump-layout");
	jw_str(&w, "layout", v);
	jw_str(&w, "magic", EVSHM_MAGIC);
	jw_u64(&w, "page", EVSHM_PAGE);
	jw_u64(&w, "segment_base_size", EVSHM_SEG_SIZE(0));
	jw_u64(&w, "hist_buckets", EVSHM_HIST_USED);
	jw_u64(&w, "hist_sub_buckets", EVSHM_HIST_SUB);
	jw_u64(&w, "counters", shm_ncounters);
	jw_u64(&w, "counters_bytes", sizeof(struct evshm_counters));
	jw_u64(&w, "histograms", shm_nhists);
	jw_open(&w, "structs", '{');
	for (unsigned i = 0; i < evd_nlayout; ) {
		const struct evd_field *f = &evd_layout[i];
		jw_open(&w, f->strct, '{');
		jw_u64(&w, "size", f->size);
		jw_open(&w, "fields", '{');
		for (i++; i < evd_nlayout && evd_layout[i].field; i++) {
			jw_open(&w, evd_layout[i].field, '[');
			jw_u64(&w, NULL, evd_layout[i].off);
			jw_u64(&w, NULL, evd_layout[i].size);
			jw_close(&w, ']');
		}
		jw_close(&w, '}');
		jw_close(&w, '}');
	}
	jw_close(&w, '}');
	jw_close(&w, '}');
}

/* ---- the layout table ------------------------------------------------------------------- */

#define S(st)		{ #st, NULL, 0, sizeof(struct st) }
#define F(st, f)	{ #st, #f, offsetof(struct st, f), sizeof(((struct st *)0)->f) }

const struct evd_field evd_layout[] = {
	S(evshm_hdr),
	F(evshm_hdr, magic), F(evshm_hdr, major), F(evshm_hdr, minor), F(evshm_hdr, hdr_size),
	F(evshm_hdr, seg_size), F(evshm_hdr, master_pid), F(evshm_hdr, ready),
	F(evshm_hdr, master_start_unix_ns), F(evshm_hdr, master_start_ticks), F(evshm_hdr, seq),
	F(evshm_hdr, slot_size), F(evshm_hdr, nslots), F(evshm_hdr, slots_off),
	F(evshm_hdr, retired_off), F(evshm_hdr, stats_size), F(evshm_hdr, nworkers),
	F(evshm_hdr, generation), F(evshm_hdr, port), F(evshm_hdr, retired_workers),
	F(evshm_hdr, counters_size), F(evshm_hdr, nhist), F(evshm_hdr, hist_buckets),
	F(evshm_hdr, flags), F(evshm_hdr, master_state), F(evshm_hdr, name), F(evshm_hdr, version),
	F(evshm_hdr, reserved),
	S(evshm_slot),
	F(evshm_slot, hd), F(evshm_slot, stats), F(evshm_slot, cpu), F(evshm_slot, alloc),
	S(evshm_slot_head),
	F(evshm_slot_head, ident_seq), F(evshm_slot_head, pid), F(evshm_slot_head, gen),
	F(evshm_slot_head, worker), F(evshm_slot_head, index), F(evshm_slot_head, fork_unix_ns),
	F(evshm_slot_head, sb_seq), F(evshm_slot_head, state), F(evshm_slot_head, publishing),
	F(evshm_slot_head, state_unix_ns), F(evshm_slot_head, ready_unix_ns),
	F(evshm_slot_head, heartbeat_mono_ns), F(evshm_slot_head, heartbeat_unix_ns),
	F(evshm_slot_head, heartbeats), F(evshm_slot_head, loop_lag_ns),
	F(evshm_slot_head, oldest_req_ns), F(evshm_slot_head, panic_len),
	F(evshm_slot_head, panic_signo), F(evshm_slot_head, panic), F(evshm_slot_head, prof),
	S(evshm_stats),
	F(evshm_stats, c), F(evshm_stats, h),
	S(evshm_hist),
	F(evshm_hist, seq), F(evshm_hist, count), F(evshm_hist, sum_ns), F(evshm_hist, bucket),
	S(evshm_prof),
	F(evshm_prof, cpu_head), F(evshm_prof, cpu_hz), F(evshm_prof, alloc_rate),
	F(evshm_prof, alloc_used), F(evshm_prof, alloc_dropped), F(evshm_prof, text_start),
	F(evshm_prof, text_end), F(evshm_prof, text_offset),
	F(evshm_prof, cpu_sampler_ns), F(evshm_prof, alloc_sampler_ns), F(evshm_prof, alloc_samples),
	S(evshm_cpu_sample),
	F(evshm_cpu_sample, seq), F(evshm_cpu_sample, t_mono_ns), F(evshm_cpu_sample, weight_ns),
	F(evshm_cpu_sample, depth), F(evshm_cpu_sample, state), F(evshm_cpu_sample, pc),
	S(evshm_alloc_bucket),
	F(evshm_alloc_bucket, seq), F(evshm_alloc_bucket, stack_hash),
	F(evshm_alloc_bucket, alloc_objects), F(evshm_alloc_bucket, alloc_bytes),
	F(evshm_alloc_bucket, free_objects), F(evshm_alloc_bucket, free_bytes),
	F(evshm_alloc_bucket, depth), F(evshm_alloc_bucket, pc),
};
const unsigned evd_nlayout = sizeof(evd_layout) / sizeof(evd_layout[0]);

/* ---- reading a snapshot back ------------------------------------------------------------- */

static uint64_t
j_u64(json_object *o, const char *key)
{
	json_object *v;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	return json_object_is_type(v, json_type_double) ? (uint64_t)json_object_get_double(v) :
	    json_object_get_uint64(v);
}

static double
j_dbl(json_object *o, const char *key)
{
	json_object *v;
	return json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : 0;
}

static void
j_str(json_object *o, const char *key, char *buf, size_t len)
{
	json_object *v;
	const char *s = json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
	snprintf(buf, len, "%s", s ? s : "");
}

static uint64_t
j_value(json_object *v, enum shm_kind kind)
{
	if (kind == SHM_GAUGE)
		return (uint64_t)json_object_get_int64(v);
	return json_object_is_type(v, json_type_double) ? (uint64_t)json_object_get_double(v) :
	    json_object_get_uint64(v);
}

static void
load_hist(json_object *o, struct evshm_hist *h)
{
	json_object *b;

	memset(h, 0, sizeof(*h));
	h->count = j_u64(o, "count");
	h->sum_ns = j_u64(o, "sum_ns");
	if (!json_object_object_get_ex(o, "buckets", &b) || !json_object_is_type(b, json_type_array))
		return;
	for (size_t i = 0; i < json_object_array_length(b); i++) {
		json_object *e = json_object_array_get_idx(b, i);
		uint64_t idx;
		if (!json_object_is_type(e, json_type_array) || json_object_array_length(e) != 3)
			continue;
		idx = json_object_get_uint64(json_object_array_get_idx(e, 0));
		if (idx < EVSHM_HIST_USED)
			h->bucket[idx] = json_object_get_uint64(json_object_array_get_idx(e, 2));
	}
}

/* Unknown names are skipped: a newer minor layout may know more counters. */
static void
load_stats(json_object *o, struct evshm_stats *st)
{
	json_object *c, *h;

	if (json_object_object_get_ex(o, "counters", &c)) {
		json_object_object_foreach(c, name, val) {
			const struct shm_counter_meta *m = shm_counter_find(name);
			if (!m)
				continue;
			if (m->dim == SHM_DIM_none) {
				st->c_raw[m->word] = j_value(val, m->kind);
				continue;
			}
			if (!json_object_is_type(val, json_type_object))
				continue;
			json_object_object_foreach(val, label, lv) {
				unsigned i = shm_label_index(m->dim, label);
				if (i == 0 && strcmp(label, "other") != 0)
					continue;
				st->c_raw[m->word + i] = j_value(lv, m->kind);
			}
		}
	}
	if (json_object_object_get_ex(o, "histograms", &h)) {
		json_object_object_foreach(h, name, val) {
			const struct shm_hist_meta *m = shm_hist_find(name);
			if (!m || !json_object_is_type(val, json_type_object))
				continue;
			if (m->dim == SHM_DIM_none) {
				load_hist(val, &st->h_raw[m->first]);
				continue;
			}
			json_object_object_foreach(val, label, hv) {
				unsigned i = shm_label_index(m->dim, label);
				if (i == 0 && strcmp(label, "other") != 0)
					continue;
				load_hist(hv, &st->h_raw[m->first + i]);
			}
		}
	}
}

int
evd_json_load(const char *path, struct shm_snap *s, char *err, size_t errlen)
{
	json_object *root, *m, *t, *ws, *f;
	char layout[16];
	unsigned major = 0, minor = 0;

	memset(s, 0, sizeof(*s));
	root = json_object_from_file(path);
	if (!root) {
		snprintf(err, errlen, "could not read snapshot \"%s\": %s", path,
		    json_util_get_last_err() ? json_util_get_last_err() : strerror(errno));
		return -1;
	}
	if (!json_object_object_get_ex(root, "format", &f) ||
	    strcmp(json_object_get_string(f), "evdump-snapshot") != 0) {
		snprintf(err, errlen, "\"%s\" is not an evdump snapshot", path);
		json_object_put(root);
		return -1;
	}
	j_str(root, "layout", layout, sizeof(layout));
	if (sscanf(layout, "%u.%u", &major, &minor) != 2 || major != EVSHM_MAJOR) {
		snprintf(err, errlen, "snapshot \"%s\" is of layout %s; this evdump reads layout %d.x",
		    path, layout, EVSHM_MAJOR);
		json_object_put(root);
		return -1;
	}
	s->major = (uint16_t)major;
	s->minor = (uint16_t)minor;
	j_str(root, "segment", s->name, sizeof(s->name));
	s->taken_unix_ns = (uint64_t)(j_dbl(root, "taken_unix") * 1e9);
	s->taken_mono_ns = j_u64(root, "taken_mono_ns");
	s->took_ns = j_u64(root, "snapshot_ns");
	if (json_object_object_get_ex(root, "master", &m)) {
		json_object *v;
		s->master_pid = (int32_t)j_u64(m, "pid");
		s->master_alive = json_object_object_get_ex(m, "alive", &v) && json_object_get_boolean(v);
		j_str(m, "state", s->master_state, sizeof(s->master_state));
		/* Compared exactly between two files: keep the microseconds written. */
		s->master_start_unix_ns = (uint64_t)(j_dbl(m, "start_unix") * 1e6 + 0.5) * 1000u;
		s->generation = (uint32_t)j_u64(m, "generation");
		j_str(m, "version", s->version, sizeof(s->version));
		s->port = (uint32_t)j_u64(m, "port");
		s->nworkers = (uint32_t)j_u64(m, "workers");
		s->retired_workers = j_u64(m, "retired_workers");
		s->flags = json_object_object_get_ex(m, "publishing", &v) && json_object_get_boolean(v) ?
		    EVSHM_F_PUBLISHING : 0;
	}
	if (json_object_object_get_ex(root, "totals", &t))
		load_stats(t, &s->total);
	if (json_object_object_get_ex(root, "workers", &ws) && json_object_is_type(ws, json_type_array)) {
		size_t n = json_object_array_length(ws);
		s->slots = calloc(n ? n : 1, sizeof(*s->slots));
		if (!s->slots) {
			snprintf(err, errlen, "out of memory");
			json_object_put(root);
			return -1;
		}
		for (size_t i = 0; i < n; i++) {
			json_object *o = json_object_array_get_idx(ws, i), *v;
			struct shm_snap_slot *sl = &s->slots[s->nused++];
			char st[32];
			sl->index = (uint32_t)j_u64(o, "slot");
			sl->worker = (uint32_t)j_u64(o, "worker");
			sl->pid = (int32_t)j_u64(o, "pid");
			sl->gen = (uint32_t)j_u64(o, "generation");
			sl->alive = json_object_object_get_ex(o, "alive", &v) && json_object_get_boolean(v);
			j_str(o, "state", st, sizeof(st));
			for (uint32_t k = 0; k < EVSHM_W_NSTATES; k++)
				if (strcmp(st, shm_wstate_name(k)) == 0)
					sl->state = k;
			sl->heartbeats = j_u64(o, "heartbeats");
			sl->heartbeat_mono_ns = j_u64(o, "heartbeat_mono_ns");
			sl->loop_lag_ns = j_u64(o, "loop_lag_ns");
			sl->oldest_req_ns = j_u64(o, "oldest_request_ns");
			sl->ready_unix_ns = (uint64_t)(j_dbl(o, "ready_unix") * 1e9);
			load_stats(o, &sl->stats);
		}
	}
	json_object_put(root);
	return 0;
}
