/*
 * pprof.c - the profile.proto encoder (see pprof.h).
 *
 * Field numbers are google/pprof main's (../shared/ref/profiles-and-
 * tooling.md 1.2); only two wire types are needed: varint (tag field<<3)
 * and length-delimited (tag field<<3|2: sub-messages, strings, packed
 * integers).  Readers insist on: string_table[0] == "", non-zero unique
 * ids for mappings, locations and functions, exactly one value per
 * sample type in every sample.  mapping[0] is taken as the main binary,
 * so the program's own mapping is written first.
 *
 * Output is gzip (zlib, level 1, as Go's BestSpeed) or raw protobuf.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "pprof.h"
#include "symbolize.h"

struct pb_buf {
	unsigned char	*p;
	size_t		 len, cap;
	int		 oom;
};

struct pp_sample {
	uint64_t	 hash;
	size_t		 addr_off;	/* into addrs */
	int		 n;
	int		 label_key;	/* string index, 0 = none */
	int		 label_unit;
	int64_t		 label_num;
	int64_t		 v[PPROF_MAX_TYPES];
};

struct pp_strtab {
	char		**s;
	size_t		 n, cap;
	uint32_t	*idx;		/* hash -> index + 1 */
	size_t		 icap;
};

struct pprof {
	struct pp_strtab str;
	int		 types[PPROF_MAX_TYPES][2];
	int		 ntypes;
	int		 period_type[2];
	int64_t		 period;
	int		 default_type;
	int		 drop;
	int64_t		 time_nanos, duration_nanos;
	int		*comments;
	size_t		 ncomments;
	struct pp_sample *samples;
	size_t		 nsamples, scap;
	uint32_t	*sidx;		/* sample hash -> index + 1 */
	size_t		 sicap;
	uint64_t	*addrs;
	size_t		 naddrs, acap;
};

/* ---- growable buffers and the wire format -------------------------------- */

static void
pb_reserve(struct pb_buf *b, size_t more)
{
	size_t cap;
	unsigned char *p;

	if (b->oom || b->len + more <= b->cap)
		return;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + more)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->oom = 1;
		return;
	}
	b->p = p;
	b->cap = cap;
}

static void
pb_bytes(struct pb_buf *b, const void *d, size_t n)
{
	pb_reserve(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void
pb_varint(struct pb_buf *b, uint64_t v)
{
	unsigned char tmp[10];
	int n = 0;

	do {
		tmp[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	pb_bytes(b, tmp, (size_t)n);
}

static void
pb_int(struct pb_buf *b, int field, int64_t v)
{
	pb_varint(b, (uint64_t)field << 3);
	pb_varint(b, (uint64_t)v);
}

/* An int field left out when zero (proto3 default). */
static void
pb_int_nz(struct pb_buf *b, int field, int64_t v)
{
	if (v)
		pb_int(b, field, v);
}

static void
pb_len(struct pb_buf *b, int field, const void *d, size_t n)
{
	pb_varint(b, (uint64_t)field << 3 | 2);
	pb_varint(b, n);
	pb_bytes(b, d, n);
}

static void
pb_msg(struct pb_buf *b, int field, struct pb_buf *m)
{
	if (m->oom)
		b->oom = 1;
	pb_len(b, field, m->p ? m->p : (unsigned char *)"", m->len);
	m->len = 0;
}

/* ---- strings ----------------------------------------------------------- */

static uint64_t
hash_bytes(const void *d, size_t n, uint64_t h)
{
	const unsigned char *p = d;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static int
str_index(struct pprof *pp, const char *s)
{
	struct pp_strtab *t = &pp->str;
	uint64_t h = hash_bytes(s, strlen(s), 0xcbf29ce484222325ull);
	size_t i;

	if (t->n * 2 >= t->icap) {
		size_t icap = t->icap ? t->icap * 2 : 256;
		uint32_t *idx = calloc(icap, sizeof(*idx));
		if (!idx)
			return 0;
		for (size_t k = 0; k < t->n; k++) {
			uint64_t hk = hash_bytes(t->s[k], strlen(t->s[k]), 0xcbf29ce484222325ull);
			size_t j = (size_t)hk & (icap - 1);
			while (idx[j])
				j = (j + 1) & (icap - 1);
			idx[j] = (uint32_t)k + 1;
		}
		free(t->idx);
		t->idx = idx;
		t->icap = icap;
	}
	for (i = (size_t)h & (t->icap - 1); t->idx[i]; i = (i + 1) & (t->icap - 1))
		if (strcmp(t->s[t->idx[i] - 1], s) == 0)
			return (int)t->idx[i] - 1;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		char **ns = realloc(t->s, cap * sizeof(*ns));
		if (!ns)
			return 0;
		t->s = ns;
		t->cap = cap;
	}
	t->s[t->n] = strdup(s);
	if (!t->s[t->n])
		return 0;
	t->idx[i] = (uint32_t)t->n + 1;
	return (int)t->n++;
}

/* ---- building ---------------------------------------------------------- */

struct pprof *
pprof_new(void)
{
	struct pprof *p = calloc(1, sizeof(*p));

	if (p && str_index(p, "") != 0) {
		pprof_free(p);
		return NULL;
	}
	return p;
}

void
pprof_free(struct pprof *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->str.n; i++)
		free(p->str.s[i]);
	free(p->str.s);
	free(p->str.idx);
	free(p->comments);
	free(p->samples);
	free(p->sidx);
	free(p->addrs);
	free(p);
}

void
pprof_sample_type(struct pprof *p, const char *type, const char *unit)
{
	if (p->ntypes >= PPROF_MAX_TYPES)
		return;
	p->types[p->ntypes][0] = str_index(p, type);
	p->types[p->ntypes][1] = str_index(p, unit);
	p->ntypes++;
}

void
pprof_period(struct pprof *p, const char *type, const char *unit, int64_t period)
{
	p->period_type[0] = str_index(p, type);
	p->period_type[1] = str_index(p, unit);
	p->period = period;
}

void
pprof_default_type(struct pprof *p, const char *type)
{
	p->default_type = str_index(p, type);
}

void
pprof_times(struct pprof *p, int64_t time_nanos, int64_t duration_nanos)
{
	p->time_nanos = time_nanos;
	p->duration_nanos = duration_nanos;
}

void
pprof_comment(struct pprof *p, const char *text)
{
	int *c = realloc(p->comments, (p->ncomments + 1) * sizeof(*c));

	if (!c)
		return;
	p->comments = c;
	c[p->ncomments++] = str_index(p, text);
}

void
pprof_drop_frames(struct pprof *p, const char *regex)
{
	p->drop = str_index(p, regex);
}

static uint64_t
sample_hash(const uint64_t *addrs, int n, int lk, int64_t ln)
{
	uint64_t h = hash_bytes(addrs, (size_t)n * sizeof(*addrs), 0xcbf29ce484222325ull);

	h = hash_bytes(&lk, sizeof(lk), h);
	return hash_bytes(&ln, sizeof(ln), h);
}

static int
sidx_grow(struct pprof *p)
{
	size_t icap = p->sicap ? p->sicap * 2 : 1024;
	uint32_t *idx = calloc(icap, sizeof(*idx));

	if (!idx)
		return -1;
	for (size_t k = 0; k < p->nsamples; k++) {
		size_t j = (size_t)p->samples[k].hash & (icap - 1);
		while (idx[j])
			j = (j + 1) & (icap - 1);
		idx[j] = (uint32_t)k + 1;
	}
	free(p->sidx);
	p->sidx = idx;
	p->sicap = icap;
	return 0;
}

int
pprof_add(struct pprof *p, const uint64_t *addrs, int n, const int64_t *values,
    const char *label_key, int64_t label_num, const char *label_unit)
{
	int lk = label_key ? str_index(p, label_key) : 0;
	int lu = label_unit ? str_index(p, label_unit) : 0;
	uint64_t h;
	size_t i;
	struct pp_sample *s;

	if (n > PPROF_MAX_DEPTH)
		n = PPROF_MAX_DEPTH;
	if (n < 0)
		n = 0;
	if (!lk)
		label_num = 0;
	h = sample_hash(addrs, n, lk, label_num);
	if (p->nsamples * 2 >= p->sicap && sidx_grow(p) < 0)
		return -1;
	for (i = (size_t)h & (p->sicap - 1); p->sidx[i]; i = (i + 1) & (p->sicap - 1)) {
		s = &p->samples[p->sidx[i] - 1];
		if (s->hash == h && s->n == n && s->label_key == lk && s->label_num == label_num &&
		    memcmp(&p->addrs[s->addr_off], addrs, (size_t)n * sizeof(*addrs)) == 0) {
			for (int k = 0; k < p->ntypes; k++)
				s->v[k] += values[k];
			return 0;
		}
	}
	if (p->nsamples == p->scap) {
		size_t cap = p->scap ? p->scap * 2 : 256;
		struct pp_sample *ns = realloc(p->samples, cap * sizeof(*ns));
		if (!ns)
			return -1;
		p->samples = ns;
		p->scap = cap;
	}
	if (p->naddrs + (size_t)n > p->acap) {
		size_t cap = p->acap ? p->acap : 4096;
		uint64_t *na;
		while (cap < p->naddrs + (size_t)n)
			cap *= 2;
		na = realloc(p->addrs, cap * sizeof(*na));
		if (!na)
			return -1;
		p->addrs = na;
		p->acap = cap;
	}
	s = &p->samples[p->nsamples];
	memset(s, 0, sizeof(*s));
	s->hash = h;
	s->addr_off = p->naddrs;
	s->n = n;
	s->label_key = lk;
	s->label_unit = lu;
	s->label_num = label_num;
	for (int k = 0; k < p->ntypes; k++)
		s->v[k] = values[k];
	memcpy(&p->addrs[p->naddrs], addrs, (size_t)n * sizeof(*addrs));
	p->naddrs += (size_t)n;
	p->sidx[i] = (uint32_t)++p->nsamples;
	return 0;
}

size_t
pprof_nsamples(const struct pprof *p)
{
	return p->nsamples;
}

/* ---- encoding ---------------------------------------------------------- */

/* address -> location id; location -> function id */
struct pp_loc {
	uint64_t	 addr;
	uint32_t	 id;
	uint32_t	 fn;
	uint32_t	 map;		/* profile mapping id, 0 = none */
	uint32_t	 line;		/* source line, 0 = unknown */
};

struct pp_fn {
	int		 name, file;
	uint32_t	 id;
	uint32_t	 start_line;
};

struct pp_enc {
	struct pp_loc	*locs;
	size_t		 nlocs, lcap;	/* open addressing by addr; id = order */
	uint32_t	*lorder;	/* id - 1 -> slot */
	struct pp_fn	*fns;
	size_t		 nfns, fcap;
	uint32_t	*fidx;		/* (name, file) -> fn index + 1 */
	size_t		 ficap;
	uint32_t	*map_ids;	/* sym map index -> profile mapping id */
	unsigned char	*map_lines;	/* sym map index -> some location has a line */
};

static uint32_t
enc_function(struct pprof *p, struct pp_enc *e, const char *name, const char *file, unsigned start_line)
{
	int ni = str_index(p, name), fi = file ? str_index(p, file) : 0;
	uint64_t h = (uint64_t)ni * 0x9e3779b97f4a7c15ull ^ (uint64_t)fi;
	size_t i;

	if (e->nfns * 2 >= e->ficap) {
		size_t icap = e->ficap ? e->ficap * 2 : 512;
		uint32_t *idx = calloc(icap, sizeof(*idx));
		if (!idx)
			return 0;
		for (size_t k = 0; k < e->nfns; k++) {
			uint64_t hk = (uint64_t)e->fns[k].name * 0x9e3779b97f4a7c15ull ^ (uint64_t)e->fns[k].file;
			size_t j = (size_t)(hk >> 7) & (icap - 1);
			while (idx[j])
				j = (j + 1) & (icap - 1);
			idx[j] = (uint32_t)k + 1;
		}
		free(e->fidx);
		e->fidx = idx;
		e->ficap = icap;
	}
	for (i = (size_t)(h >> 7) & (e->ficap - 1); e->fidx[i]; i = (i + 1) & (e->ficap - 1)) {
		struct pp_fn *f = &e->fns[e->fidx[i] - 1];
		if (f->name == ni && f->file == fi)
			return f->id;
	}
	if (e->nfns == e->fcap) {
		size_t cap = e->fcap ? e->fcap * 2 : 256;
		struct pp_fn *nf = realloc(e->fns, cap * sizeof(*nf));
		if (!nf)
			return 0;
		e->fns = nf;
		e->fcap = cap;
	}
	e->fns[e->nfns] = (struct pp_fn){ ni, fi, (uint32_t)e->nfns + 1, start_line };
	e->fidx[i] = (uint32_t)++e->nfns;
	return (uint32_t)e->nfns;
}

static const char *
base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* Location id of an address (created and symbolised on first sight). */
static uint32_t
enc_location(struct pprof *p, struct pp_enc *e, struct sym_ctx *sc, uint64_t addr)
{
	size_t i = (size_t)((addr * 0x9e3779b97f4a7c15ull) >> 20) & (e->lcap - 1);
	struct sym_frame fr = { 0 };
	char name[256];

	for (; e->locs[i].id; i = (i + 1) & (e->lcap - 1))
		if (e->locs[i].addr == addr)
			return e->locs[i].id;
	if (sc)
		sym_lookup(sc, addr, &fr);
	if (fr.func)
		snprintf(name, sizeof(name), "%s", fr.func);
	else if (fr.map)
		snprintf(name, sizeof(name), "[%s]", base_name(fr.map->path));
	else
		snprintf(name, sizeof(name), "0x%llx", (unsigned long long)addr);
	e->locs[i].addr = addr;
	e->locs[i].id = (uint32_t)++e->nlocs;
	/*
	 * The function's file is that of its first instruction; a line of
	 * another file is code inlined from it (a header, another unit
	 * under LTO): no line rather than a line of the wrong file.
	 */
	e->locs[i].fn = enc_function(p, e, name, fr.func_file, fr.func_line);
	e->locs[i].line = fr.file && fr.func_file && strcmp(fr.file, fr.func_file) == 0 ? fr.line : 0;
	e->locs[i].map = fr.map && e->map_ids ? e->map_ids[fr.map->id - 1] : 0;
	if (fr.func_file && fr.map && e->map_lines)
		e->map_lines[fr.map->id - 1] = 1;
	e->lorder[e->nlocs - 1] = (uint32_t)i;
	return e->locs[i].id;
}

static int
gzip_buf(const unsigned char *in, size_t inlen, unsigned char **out, size_t *outlen)
{
	z_stream z;
	size_t cap = inlen / 2 + 1024;
	unsigned char *o = malloc(cap);
	int rc;

	if (!o)
		return -1;
	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		free(o);
		return -1;
	}
	z.next_in = (unsigned char *)in;
	z.avail_in = (uInt)inlen;
	for (;;) {
		z.next_out = o + z.total_out;
		z.avail_out = (uInt)(cap - z.total_out);
		rc = deflate(&z, Z_FINISH);
		if (rc == Z_STREAM_END)
			break;
		if (rc != Z_OK && rc != Z_BUF_ERROR) {
			deflateEnd(&z);
			free(o);
			return -1;
		}
		{
			unsigned char *no = realloc(o, cap * 2);
			if (!no) {
				deflateEnd(&z);
				free(o);
				return -1;
			}
			o = no;
			cap *= 2;
		}
	}
	*outlen = z.total_out;
	deflateEnd(&z);
	*out = o;
	return 0;
}

int
pprof_encode(struct pprof *p, struct sym_ctx *sc, int gzip, unsigned char **out, size_t *outlen)
{
	struct pb_buf b = { 0 }, m = { 0 }, sub = { 0 };
	struct pp_enc e = { 0 };
	unsigned nmaps = sc ? sym_nmaps(sc) : 0;
	uint32_t *loc_ids = NULL;
	int rc = -1;

	/* Mapping ids: the program first (readers take mapping[0] as the main binary). */
	if (nmaps) {
		uint32_t next = 1;
		e.map_ids = calloc(nmaps, sizeof(*e.map_ids));
		e.map_lines = calloc(nmaps, 1);
		if (!e.map_ids || !e.map_lines)
			goto out;
		for (unsigned i = 0; i < nmaps; i++)
			if (sym_map_at(sc, i)->is_main)
				e.map_ids[i] = next++;
		for (unsigned i = 0; i < nmaps; i++)
			if (!e.map_ids[i])
				e.map_ids[i] = next++;
	}
	e.lcap = 1024;
	while (e.lcap < p->naddrs * 2 + 2)
		e.lcap *= 2;
	e.locs = calloc(e.lcap, sizeof(*e.locs));
	e.lorder = calloc(e.lcap, sizeof(*e.lorder));
	loc_ids = malloc((PPROF_MAX_DEPTH + 1) * sizeof(*loc_ids));
	if (!e.locs || !e.lorder || !loc_ids)
		goto out;

	for (int k = 0; k < p->ntypes; k++) {
		pb_int(&m, 1, p->types[k][0]);
		pb_int(&m, 2, p->types[k][1]);
		pb_msg(&b, 1, &m);
	}
	for (size_t si = 0; si < p->nsamples; si++) {
		struct pp_sample *s = &p->samples[si];

		for (int k = 0; k < s->n; k++)
			pb_varint(&sub, enc_location(p, &e, sc, p->addrs[s->addr_off + (size_t)k]));
		pb_msg(&m, 1, &sub);
		for (int k = 0; k < p->ntypes; k++)
			pb_varint(&sub, (uint64_t)s->v[k]);
		pb_msg(&m, 2, &sub);
		if (s->label_key) {
			pb_int(&sub, 1, s->label_key);
			pb_int(&sub, 3, s->label_num);
			pb_int_nz(&sub, 4, s->label_unit);
			pb_msg(&m, 3, &sub);
		}
		pb_msg(&b, 2, &m);
	}
	for (unsigned i = 0; i < nmaps; i++) {
		/* In id order. */
		for (unsigned j = 0; j < nmaps; j++) {
			const struct sym_map *sm;
			if (e.map_ids[j] != i + 1)
				continue;
			sm = sym_map_at(sc, j);
			pb_int(&m, 1, e.map_ids[j]);
			pb_int(&m, 2, (int64_t)sm->start);
			pb_int(&m, 3, (int64_t)sm->limit);
			pb_int_nz(&m, 4, (int64_t)sm->offset);
			pb_int(&m, 5, str_index(p, sm->path));
			pb_int_nz(&m, 6, sm->build_id[0] ? str_index(p, sm->build_id) : 0);
			pb_int(&m, 7, 1);	/* has_functions: readers do not re-symbolise */
			pb_int_nz(&m, 8, e.map_lines[j]);	/* has_filenames */
			pb_int_nz(&m, 9, e.map_lines[j]);	/* has_line_numbers */
			pb_msg(&b, 3, &m);
		}
	}
	for (size_t k = 0; k < e.nlocs; k++) {
		struct pp_loc *l = &e.locs[e.lorder[k]];

		pb_int(&m, 1, l->id);
		pb_int_nz(&m, 2, l->map);
		pb_int(&m, 3, (int64_t)l->addr);
		pb_int(&sub, 1, l->fn);
		pb_int_nz(&sub, 2, l->line);
		pb_msg(&m, 4, &sub);
		pb_msg(&b, 4, &m);
	}
	for (size_t k = 0; k < e.nfns; k++) {
		pb_int(&m, 1, e.fns[k].id);
		pb_int(&m, 2, e.fns[k].name);
		pb_int(&m, 3, e.fns[k].name);
		pb_int_nz(&m, 4, e.fns[k].file);
		pb_int_nz(&m, 5, e.fns[k].start_line);
		pb_msg(&b, 5, &m);
	}
	for (size_t k = 0; k < p->str.n; k++)
		pb_len(&b, 6, p->str.s[k], strlen(p->str.s[k]));
	pb_int_nz(&b, 7, p->drop);
	pb_int_nz(&b, 9, p->time_nanos);
	pb_int_nz(&b, 10, p->duration_nanos);
	if (p->period_type[0]) {
		pb_int(&m, 1, p->period_type[0]);
		pb_int(&m, 2, p->period_type[1]);
		pb_msg(&b, 11, &m);
	}
	pb_int_nz(&b, 12, p->period);
	for (size_t k = 0; k < p->ncomments; k++)
		pb_int(&b, 13, p->comments[k]);
	pb_int_nz(&b, 14, p->default_type);
	if (b.oom || m.oom || sub.oom)
		goto out;

	if (gzip) {
		if (gzip_buf(b.p, b.len, out, outlen) < 0)
			goto out;
	} else {
		*out = b.p;
		*outlen = b.len;
		b.p = NULL;
	}
	rc = 0;
out:
	free(b.p);
	free(m.p);
	free(sub.p);
	free(e.locs);
	free(e.lorder);
	free(e.fns);
	free(e.fidx);
	free(e.map_ids);
	free(e.map_lines);
	free(loc_ids);
	return rc;
}
