/*
 * evcheck_check.c - the invariants of ../shared/ref/reliability-security.md
 * section 1.5 over the recorded history (ec.ops), the final read
 * (ec_stream_view, ec_cat_view) and the followers' logs; and --inject,
 * which corrupts one of them first so the self-test can show every check
 * fails when it should.
 *
 *   N1  an ok write is readable at its position P and global position G,
 *       in its stream and its category, with the type/data/metadata sent
 *   N2  a stream's positions are exactly 0..n-1
 *   N3  a message id is stored at most once
 *   N4  every stored message of the run's streams and categories comes
 *       from a write this run invoked (into that stream)
 *   N5  a write with a definite failure (4xx) is not stored
 *   N6  an indeterminate write is stored at most once
 *   N7  a stored write sent with expectedVersion v sits at position v+1
 *   N8  a category read is ascending by global position without repeats,
 *       agrees with the position order of each stream and holds the same
 *       messages as the category's streams (also the followers' polls)
 *   N9  a read never sees an older version of a stream (or category) than
 *       one any operation had observed before the read was sent: reads by
 *       one client never go backwards, and a read started after a write
 *       or read completed sees at least that version
 *   skip  every message of a category below a follower's final cursor was
 *       seen by that follower
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evcheck.h"

void
ec_violation(enum ec_inv inv, const char *fmt, ...)
{
	char buf[320];
	int n;
	va_list ap;

	ec.viol[inv]++;
	if (ec.nexamples[inv] >= EC_EXAMPLES)
		return;
	n = snprintf(buf, sizeof(buf), "%s ", ec_inv_names[inv]);
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	ec.examples[inv][ec.nexamples[inv]] = strdup(buf);
	if (ec.examples[inv][ec.nexamples[inv]])
		ec.nexamples[inv]++;
}

/* ------------------------------------------------------------------ inject */

static int64_t
max_gpos(void)
{
	int64_t g = 0;
	size_t i;
	int c;

	for (c = 0; c < ec.ncats; c++)
		for (i = 0; i < ec_cat_view[c].n; i++)
			if (ec_cat_view[c].m[i].gpos > g)
				g = ec_cat_view[c].m[i].gpos;
	return g;
}

static struct ec_msg *
view_push(struct ec_view *v, const struct ec_msg *m)
{
	struct ec_msg *slot = ec_view_add(v);

	*slot = *m;
	return slot;
}

static void
view_remove(struct ec_view *v, size_t i)
{
	memmove(&v->m[i], &v->m[i + 1], (v->n - i - 1) * sizeof(v->m[0]));
	v->n--;
}

/* Remove the category view's entry of op. */
static void
cat_remove_op(int s, uint32_t op)
{
	struct ec_view *v = &ec_cat_view[ec.stream_cat[s]];
	size_t i;

	for (i = 0; i < v->n; i++)
		if (v->m[i].op == op) {
			view_remove(v, i);
			return;
		}
}

/* A stored message (index *at in stream *sp) of an ok write, optionally with expectedVersion. */
static struct ec_msg *
find_ok(int *sp, size_t *at, int need_ev, int want_last)
{
	int s;
	size_t i;

	for (s = 0; s < ec.nstreams; s++) {
		struct ec_view *v = &ec_stream_view[s];

		for (i = 0; i < v->n; i++) {
			struct ec_msg *m = &v->m[want_last ? v->n - 1 - i : i];

			if (m->op == EC_NONE || ec.ops[m->op].outcome != EC_OK)
				continue;
			if (need_ev && ec.ops[m->op].ev == EC_NOEV)
				continue;
			*sp = s;
			*at = want_last ? v->n - 1 - i : i;
			return m;
		}
	}
	return NULL;
}

static void
inject_dup(struct ec_msg *m, int s)
{
	struct ec_view *v = &ec_stream_view[s];
	struct ec_msg copy = *m;

	copy.pos = v->m[v->n - 1].pos + 1;
	copy.gpos = max_gpos() + 1;
	view_push(v, &copy);
	copy.stream = s;
	view_push(&ec_cat_view[ec.stream_cat[s]], &copy);
}

static void
inject_one(enum ec_inject k)
{
	struct ec_msg *m;
	size_t at, i;
	int s, c, f;

	switch (k) {
	case EC_INJ_PHANTOM:
		if ((m = find_ok(&s, &at, 0, 0)) == NULL)
			break;
		{
			uint32_t op = m->op;

			ec.ops[op].kind = EC_FORGOTTEN;
			for (s = 0; s < ec.nstreams; s++)
				for (i = 0; i < ec_stream_view[s].n; i++)
					if (ec_stream_view[s].m[i].op == op)
						ec_stream_view[s].m[i].op = EC_NONE;
			for (c = 0; c < ec.ncats; c++)
				for (i = 0; i < ec_cat_view[c].n; i++)
					if (ec_cat_view[c].m[i].op == op)
						ec_cat_view[c].m[i].op = EC_NONE;
		}
		return;
	case EC_INJ_LOST:
		/* the last message of a stream, so no gap shows up (N2 stays quiet) */
		for (s = 0; s < ec.nstreams; s++) {
			struct ec_view *v = &ec_stream_view[s];

			if (v->n && v->m[v->n - 1].op != EC_NONE &&
			    ec.ops[v->m[v->n - 1].op].outcome == EC_OK) {
				uint32_t op = v->m[v->n - 1].op;

				v->n--;
				cat_remove_op(s, op);
				return;
			}
		}
		break;
	case EC_INJ_DUP:
		if ((m = find_ok(&s, &at, 0, 0)) == NULL)
			break;
		inject_dup(m, s);
		return;
	case EC_INJ_GAP:
		for (s = 0; s < ec.nstreams; s++) {
			struct ec_view *v = &ec_stream_view[s];

			if (v->n >= 3) {
				uint32_t op = v->m[1].op;

				view_remove(v, 1);
				if (op != EC_NONE)
					cat_remove_op(s, op);
				return;
			}
		}
		break;
	case EC_INJ_FAIL:
		if ((m = find_ok(&s, &at, 0, 0)) == NULL)
			break;
		ec.ops[m->op].outcome = EC_FAIL;
		ec.ops[m->op].status = 409;
		ec.ops[m->op].code = (uint8_t)ec_code_index("STREAM_VERSION_CONFLICT", 23);
		return;
	case EC_INJ_INDET:
		if ((m = find_ok(&s, &at, 0, 0)) == NULL)
			break;
		ec.ops[m->op].outcome = EC_INDET;
		ec.ops[m->op].why = EC_W_TIMEOUT;
		inject_dup(m, s);
		return;
	case EC_INJ_MOVE:
		if ((m = find_ok(&s, &at, 1, 0)) == NULL)
			break;
		ec.ops[m->op].ev--;
		return;
	case EC_INJ_ORDER:
		for (c = 0; c < ec.ncats; c++) {
			struct ec_view *v = &ec_cat_view[c];

			if (v->n >= 2) {
				struct ec_msg t = v->m[0];

				v->m[0] = v->m[1];
				v->m[1] = t;
				return;
			}
		}
		break;
	case EC_INJ_STALE:
		if ((m = find_ok(&s, &at, 0, 1)) == NULL)
			break;
		{
			uint64_t tmax = 0;
			struct ec_op *o;

			for (i = 0; i < ec.nops; i++)
				if (ec.ops[i].t_done > tmax)
					tmax = ec.ops[i].t_done;
			if (ec.nops == ec.capops) {
				struct ec_op *n = realloc(ec.ops, (ec.capops + 1) * sizeof(*n));

				if (n == NULL)
					ec_fatal("out of memory");
				ec.ops = n;
				ec.capops++;
			}
			o = &ec.ops[ec.nops++];
			memset(o, 0, sizeof(*o));
			o->kind = EC_READ;
			o->key = (uint32_t)s;
			o->t_inv = tmax + 1000;
			o->t_done = tmax + 2000;
			o->ev = 0;
			o->pos = -1;
			o->outcome = EC_OK;
			o->status = 200;
		}
		return;
	case EC_INJ_SKIP:
		for (f = 0; f < ec.nfollowers; f++) {
			struct ec_follower *fl = &ec.followers[f];

			if (fl->nseen >= 1) {
				memmove(fl->seen, fl->seen + 1, (fl->nseen - 1) * sizeof(fl->seen[0]));
				fl->nseen--;
				return;
			}
		}
		break;
	default:
		break;
	}
	fprintf(stderr, "evcheck: --inject %s: nothing to corrupt in this run\n", ec_inject_names[k]);
}

void
ec_apply_inject(void)
{
	int k;

	for (k = 0; k < EC_INJ_NKINDS; k++)
		if (ec.cfg.inject & (1u << k))
			inject_one((enum ec_inject)k);
}

/* ------------------------------------------------------------------ checks */

struct opaux {
	uint16_t	occ;		/* times stored in its stream */
	uint16_t	cat_occ;	/* times in its category's read */
	uint8_t		found;		/* stored at the acknowledged P and G */
	int64_t		seen_pos;	/* a position where it was stored */
	int64_t		seen_gpos;
};

static void
check_streams(struct opaux *aux)
{
	int s;
	size_t i;

	for (s = 0; s < ec.nstreams; s++) {
		struct ec_view *v = &ec_stream_view[s];
		const char *sn = ec.stream_name[s];
		int64_t prev = -1;

		for (i = 0; i < v->n; i++) {
			struct ec_msg *m = &v->m[i];
			struct ec_op *o;

			if (m->pos == prev)
				ec_violation(EC_N2, "stream %s: position %lld twice", sn, (long long)m->pos);
			else if (m->pos > prev + 1)
				ec_violation(EC_N2, "stream %s: position%s %lld%s%.0lld missing", sn,
				    m->pos > prev + 2 ? "s" : "", (long long)(prev + 1),
				    m->pos > prev + 2 ? ".." : "",
				    m->pos > prev + 2 ? (long long)(m->pos - 1) : 0LL);
			else if (m->pos < prev)
				ec_violation(EC_N2, "stream %s: position %lld after %lld", sn,
				    (long long)m->pos, (long long)prev);
			if (m->pos > prev)
				prev = m->pos;

			if (m->op == EC_NONE) {
				ec_violation(EC_N4, "stream %s position %lld: id %s was never written by this run",
				    sn, (long long)m->pos, m->id);
				continue;
			}
			o = &ec.ops[m->op];
			if (o->key != (uint32_t)s) {
				ec_violation(EC_N4, "stream %s position %lld: id %s was written to %s", sn,
				    (long long)m->pos, m->id, ec.stream_name[o->key]);
				continue;
			}
			if (aux[m->op].occ < UINT16_MAX)
				aux[m->op].occ++;
			aux[m->op].seen_pos = m->pos;
			aux[m->op].seen_gpos = m->gpos;
			if (!m->content_ok)
				ec_violation(EC_N1, "stream %s position %lld: id %s: type, data or metadata "
				    "differ from what was written", sn, (long long)m->pos, m->id);
			if (o->outcome == EC_FAIL)
				ec_violation(EC_N5, "stream %s position %lld: id %s is stored but its write "
				    "failed with %u %s", sn, (long long)m->pos, m->id, o->status,
				    ec.codes[o->code]);
			if (o->ev != EC_NOEV && m->pos != o->ev + 1)
				ec_violation(EC_N7, "stream %s: id %s written with expectedVersion %lld "
				    "is at position %lld", sn, m->id, (long long)o->ev, (long long)m->pos);
			if (o->outcome == EC_OK && m->pos == o->pos && m->gpos == o->gpos)
				aux[m->op].found = 1;
		}
	}
}

static void
check_categories(struct opaux *aux)
{
	int64_t *lastpos = malloc((size_t)ec.nstreams * sizeof(*lastpos));
	size_t *in_cat = calloc((size_t)ec.nstreams, sizeof(*in_cat));
	int c, s;
	size_t i;

	if (lastpos == NULL || in_cat == NULL)
		ec_fatal("out of memory");
	for (c = 0; c < ec.ncats; c++) {
		struct ec_view *v = &ec_cat_view[c];
		const char *cn = ec.cat_name[c];
		int64_t prevg = 0;

		for (s = 0; s < ec.nstreams; s++)
			lastpos[s] = -1;
		for (i = 0; i < v->n; i++) {
			struct ec_msg *m = &v->m[i];

			if (m->gpos <= prevg)
				ec_violation(EC_N8, "category %s: globalPosition %lld after %lld", cn,
				    (long long)m->gpos, (long long)prevg);
			else
				prevg = m->gpos;
			if (m->stream < 0 && m->foreign)
				continue;	/* --foreign: someone else's, checked for order and skips only */
			if (m->stream < 0) {
				ec_violation(EC_N4, "category %s globalPosition %lld: id %s is in a stream "
				    "this run never wrote", cn, (long long)m->gpos, m->id);
				continue;
			}
			if (ec.stream_cat[m->stream] != c) {
				ec_violation(EC_N8, "category %s: holds %s of another category", cn,
				    ec.stream_name[m->stream]);
				continue;
			}
			in_cat[m->stream]++;
			if (m->pos <= lastpos[m->stream])
				ec_violation(EC_N8, "category %s: %s position %lld (globalPosition %lld) "
				    "after position %lld", cn, ec.stream_name[m->stream], (long long)m->pos,
				    (long long)m->gpos, (long long)lastpos[m->stream]);
			else
				lastpos[m->stream] = m->pos;
			if (m->op == EC_NONE)
				continue;	/* N4 was counted in the stream's read */
			if (aux[m->op].cat_occ < UINT16_MAX)
				aux[m->op].cat_occ++;
			if (aux[m->op].occ && (m->gpos != aux[m->op].seen_gpos ||
			    m->pos != aux[m->op].seen_pos))
				ec_violation(EC_N8, "category %s: id %s at position %lld globalPosition %lld, "
				    "the stream read has %lld/%lld", cn, m->id, (long long)m->pos,
				    (long long)m->gpos, (long long)aux[m->op].seen_pos,
				    (long long)aux[m->op].seen_gpos);
		}
	}
	for (s = 0; s < ec.nstreams; s++)
		if (in_cat[s] != ec_stream_view[s].n)
			ec_violation(EC_N8, "stream %s holds %zu messages, its category's read %zu",
			    ec.stream_name[s], ec_stream_view[s].n, in_cat[s]);
	free(lastpos);
	free(in_cat);
}

static void
check_ops(struct opaux *aux)
{
	char idt[37];
	size_t i;

	for (i = 0; i < ec.nops; i++) {
		const struct ec_op *o = &ec.ops[i];
		const struct opaux *a = &aux[i];

		if (o->kind != EC_WRITE)
			continue;
		if (a->occ > 1 || a->cat_occ > 1) {
			ec_uuid_text(o->id, idt);
			ec_violation(EC_N3, "id %s is stored %u times in %s", idt,
			    a->occ > a->cat_occ ? a->occ : a->cat_occ, ec.stream_name[o->key]);
			if (o->outcome == EC_INDET)
				ec_violation(EC_N6, "indeterminate write %s (%s) is stored %u times", idt,
				    ec.stream_name[o->key], a->occ > a->cat_occ ? a->occ : a->cat_occ);
		}
		if (o->outcome != EC_OK)
			continue;
		if (!a->found) {
			ec_uuid_text(o->id, idt);
			if (a->occ)
				ec_violation(EC_N1, "ok write %s to %s acknowledged at position %lld "
				    "globalPosition %lld is stored at %lld/%lld", idt, ec.stream_name[o->key],
				    (long long)o->pos, (long long)o->gpos, (long long)a->seen_pos,
				    (long long)a->seen_gpos);
			else
				ec_violation(EC_N1, "ok write %s to %s (position %lld, globalPosition %lld) "
				    "is not stored", idt, ec.stream_name[o->key], (long long)o->pos,
				    (long long)o->gpos);
		} else if (a->cat_occ == 0) {
			ec_uuid_text(o->id, idt);
			ec_violation(EC_N1, "ok write %s to %s (globalPosition %lld) is missing from "
			    "category %s", idt, ec.stream_name[o->key], (long long)o->gpos,
			    ec.cat_name[ec.stream_cat[o->key]]);
		}
	}
}

/* ------------------------------------------------------------------ N9 */

struct n9ev {
	uint64_t	t;
	uint32_t	key;
	uint8_t		witness;	/* 0 = a check at invocation, 1 = a witness at completion */
	int64_t		v;
	uint32_t	op;
};

static int
cmp_n9(const void *pa, const void *pb)
{
	const struct n9ev *a = pa, *b = pb;

	if (a->key != b->key)
		return a->key < b->key ? -1 : 1;
	if (a->t != b->t)
		return a->t < b->t ? -1 : 1;
	return (int)a->witness - (int)b->witness;	/* checks before witnesses of the same instant */
}

static void
check_n9(void)
{
	struct n9ev *e = malloc((2 * ec.nops + 1) * sizeof(*e));
	size_t n = 0, i;
	uint32_t key = UINT32_MAX;
	int64_t best = INT64_MIN;
	uint32_t best_op = 0;

	if (e == NULL)
		ec_fatal("out of memory");
	for (i = 0; i < ec.nops; i++) {
		const struct ec_op *o = &ec.ops[i];
		uint32_t k = o->kind == EC_CREAD ? (uint32_t)ec.nstreams + o->key : o->key;

		if (o->outcome != EC_OK)
			continue;
		switch (o->kind) {
		case EC_WRITE:
			e[n++] = (struct n9ev){ o->t_done, o->key, 1, o->pos, (uint32_t)i };
			e[n++] = (struct n9ev){ o->t_done, (uint32_t)ec.nstreams + (uint32_t)ec.stream_cat[o->key],
			    1, o->gpos, (uint32_t)i };
			break;
		case EC_READ:
		case EC_CREAD:
		case EC_VERSION:
			if (o->pos >= 0 && (o->kind == EC_VERSION || o->gpos > 0))
				e[n++] = (struct n9ev){ o->t_done, k, 1, o->pos, (uint32_t)i };
			if (!o->full)
				e[n++] = (struct n9ev){ o->t_inv, k, 0, o->pos, (uint32_t)i };
			break;
		default:
			break;
		}
	}
	qsort(e, n, sizeof(*e), cmp_n9);
	for (i = 0; i < n; i++) {
		if (e[i].key != key) {
			key = e[i].key;
			best = INT64_MIN;
		}
		if (e[i].witness) {
			if (e[i].v > best) {
				best = e[i].v;
				best_op = e[i].op;
			}
			continue;
		}
		if (best != INT64_MIN && e[i].v < best) {
			const struct ec_op *r = &ec.ops[e[i].op], *w = &ec.ops[best_op];
			int cat = key >= (uint32_t)ec.nstreams;

			ec_violation(EC_N9, "%s %s: client %u's %s (op %u) at %.3f s saw %s %lld, but op %u "
			    "(client %u, %s) had seen %lld by %.3f s", cat ? "category" : "stream",
			    cat ? ec.cat_name[key - (uint32_t)ec.nstreams] : ec.stream_name[key],
			    r->client, r->kind == EC_VERSION ? "stream.version" :
			    r->kind == EC_READ ? "stream.get" : "category.get", e[i].op,
			    (double)r->t_inv / 1e9, r->gpos == 0 && r->kind != EC_VERSION ? "nothing from" : "up to",
			    r->gpos == 0 && r->kind != EC_VERSION ? (long long)r->ev : (long long)e[i].v,
			    best_op, w->client, w->kind == EC_WRITE ? "write" : "read", (long long)best,
			    (double)w->t_done / 1e9);
		}
	}
	free(e);
}

/* ------------------------------------------------------------------ skip */

static int
cmp_i64(const void *pa, const void *pb)
{
	int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;

	return a < b ? -1 : a > b;
}

static void
check_followers(void)
{
	int f;
	size_t i;

	for (f = 0; f < ec.nfollowers; f++) {
		struct ec_follower *fl = &ec.followers[f];
		struct ec_view *v = &ec_cat_view[fl->category];

		if (fl->order_errors) {
			ec.viol[EC_N8] += fl->order_errors - 1;
			ec_violation(EC_N8, "%s", fl->order_example + 3);
		}
		qsort(fl->seen, fl->nseen, sizeof(fl->seen[0]), cmp_i64);
		for (i = 0; i < v->n; i++) {
			int64_t g = v->m[i].gpos;

			if (g >= fl->cursor)
				continue;
			if (fl->nseen && bsearch(&g, fl->seen, fl->nseen, sizeof(g), cmp_i64))
				continue;
			ec_violation(EC_SKIP, "follower %d of category %s: globalPosition %lld (id %s) is "
			    "below its cursor %lld but was never returned to it", f,
			    ec.cat_name[fl->category], (long long)g, v->m[i].id, (long long)fl->cursor);
		}
	}
}

void
ec_check(void)
{
	struct opaux *aux = calloc(ec.nops ? ec.nops : 1, sizeof(*aux));

	if (aux == NULL)
		ec_fatal("out of memory");
	check_streams(aux);
	check_categories(aux);
	check_ops(aux);
	check_n9();
	check_followers();
	free(aux);
}
