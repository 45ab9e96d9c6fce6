/*
 * evcheck_final.c - evcheck's final read: every stream of the run
 * (stream.get, paged by position) and every category (category.get,
 * paged by global position), batchSize 1000, over one blocking keep-alive
 * connection.  A request that fails (no connection, timeout, 5xx, an
 * answer we cannot parse) is retried every 100 ms on a new connection
 * until --final-timeout has passed since the final read began; a 4xx is
 * final (a wrong token does not get better).
 *
 * Each message read is matched to the write that produced it by its id
 * (ec_id_op) and its type, data and metadata are compared with what that
 * write sent; the result is ec_stream_view[] and ec_cat_view[].
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "evcheck.h"
#include "httpresp.h"

#define PAGE		1000
#define RETRY_MS	100
#define MIN_REQ_NS	(10ull * 1000000000u)	/* a page of 1000 may take a while */

struct ec_view *ec_stream_view;
struct ec_view *ec_cat_view;

static int fd = -1;
static char *rbuf;
static size_t rcap, rlen;
static uint64_t deadline;
static json_tokener *tok;

static void
drop(void)
{
	if (fd >= 0)
		close(fd);
	fd = -1;
	rlen = 0;
}

static int
wait_fd(short events, uint64_t until)
{
	struct pollfd p = { .fd = fd, .events = events };
	uint64_t now = ec_now_ns();
	int rc;

	if (now >= until)
		return -1;
	do {
		rc = poll(&p, 1, (int)((until - now) / 1000000u) + 1);
	} while (rc < 0 && errno == EINTR);
	return rc > 0 ? 0 : -1;
}

static int
open_conn(uint64_t until)
{
	struct addrinfo hints, *res = NULL;
	int one = 1, soerr = 0;
	socklen_t sl = sizeof(soerr);

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(ec.cfg.srv.host, ec.cfg.srv.port, &hints, &res) != 0 || res == NULL)
		return -1;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		freeaddrinfo(res);
		return -1;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
		if (errno != EINPROGRESS || wait_fd(POLLOUT, until) < 0 ||
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
			freeaddrinfo(res);
			drop();
			return -1;
		}
	}
	freeaddrinfo(res);
	return 0;
}

/*
 * One RPC: returns the HTTP status with the body in *body, *blen (valid
 * until the next call), or -1 on a transport failure.
 */
static int
rpc_once(const char *req, size_t reqlen, const char **body, size_t *blen)
{
	uint64_t until = ec_now_ns() + (ec.cfg.timeout_ns > MIN_REQ_NS ? ec.cfg.timeout_ns : MIN_REQ_NS);
	struct hresp p;
	size_t off = 0;
	ssize_t n;
	long len;
	int eof = 0;

	if (fd < 0 && open_conn(until) < 0)
		return -1;
	while (off < reqlen) {
		n = send(fd, req + off, reqlen - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(POLLOUT, until) == 0)
			continue;
		drop();
		return -1;
	}
	memset(&p, 0, sizeof(p));
	rlen = 0;
	for (;;) {
		len = rlen ? hresp_parse(&p, rbuf, rlen, eof) : 0;
		if (len < 0) {
			drop();
			return -1;
		}
		if (len > 0 && p.status < 200) {	/* interim: skip it */
			memmove(rbuf, rbuf + len, rlen - (size_t)len);
			rlen -= (size_t)len;
			memset(&p, 0, sizeof(p));
			continue;
		}
		if (len > 0)
			break;
		if (eof) {
			drop();
			return -1;
		}
		if (rcap - rlen < 65536) {
			char *nb = realloc(rbuf, rcap * 2);

			if (nb == NULL || rcap * 2 > HRESP_BODY_MAX)
				ec_fatal("out of memory for the final read");
			rbuf = nb;
			rcap *= 2;
		}
		n = read(fd, rbuf + rlen, rcap - rlen);
		if (n > 0) {
			rlen += (size_t)n;
			continue;
		}
		if (n == 0) {
			eof = 1;
			continue;
		}
		if (errno == EINTR)
			continue;
		if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(POLLIN, until) == 0)
			continue;
		drop();
		return -1;
	}
	*body = hresp_body(&p, rbuf, (size_t)len, blen);
	if (*body == NULL) {
		drop();
		return -1;
	}
	if (p.close || (size_t)len != rlen)
		drop();	/* the body stays in rbuf until the next call */
	return p.status;
}

/* An RPC retried until it answers 200 (-> parsed JSON) or deadline passes (-> NULL). */
static json_object *
rpc(const char *body, size_t bodylen)
{
	char *req;
	const char *rb;
	size_t reqlen, rbl;
	json_object *v;
	int st, n;
	static int said;

	req = malloc(bodylen + 2048);
	if (req == NULL)
		ec_fatal("out of memory");
	n = evc_post_head(req, 2048, "evcheck/" PACKAGE_VERSION, &ec.cfg.srv, ec.cfg.token);
	if (n >= 0 && n < 2048)
		n += snprintf(req + n, 2048 - (size_t)n, "%zu\r\n\r\n", bodylen);
	if (n < 0 || n >= 2048)
		ec_fatal("URL or token too long");
	memcpy(req + n, body, bodylen);
	reqlen = (size_t)n + bodylen;
	for (;;) {
		st = rpc_once(req, reqlen, &rb, &rbl);
		if (st == 200) {
			json_tokener_reset(tok);
			v = json_tokener_parse_ex(tok, rb, (int)rbl);
			if (v != NULL && json_tokener_get_error(tok) == json_tokener_success) {
				free(req);
				return v;
			}
			if (v)
				json_object_put(v);
		} else if (st >= 400 && st < 500) {
			fprintf(stderr, "evcheck: final read: %.*s answered %d: %.*s\n",
			    (int)(bodylen > 80 ? 80 : bodylen), body, st, (int)(rbl > 200 ? 200 : rbl), rb);
			free(req);
			return NULL;
		}
		if (ec_now_ns() >= deadline) {
			free(req);
			return NULL;
		}
		if (!said && !ec.cfg.quiet) {
			said = 1;
			fprintf(stderr, "evcheck: final read: no answer yet (%d), retrying\n", st);
		}
		drop();
		usleep(RETRY_MS * 1000);
	}
}

static int
obj_len(json_object *o)
{
	return json_object_is_type(o, json_type_object) ? json_object_object_length(o) : -1;
}

static int
int_member(json_object *o, const char *k, int64_t want)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_int) &&
	    json_object_get_int64(v) == want;
}

/* Type, data and metadata of a stored message as write `op` sent them? */
static int
content_ok(uint32_t op, json_object *type, json_object *data, json_object *meta)
{
	char want[16];
	json_object *s;

	ec_type_name(op, want, sizeof(want));
	if (!json_object_is_type(type, json_type_string) || strcmp(json_object_get_string(type), want))
		return 0;
	if (obj_len(data) != 3 || !int_member(data, "c", ec.ops[op].client) ||
	    !int_member(data, "n", op) || !json_object_object_get_ex(data, "s", &s) ||
	    !json_object_is_type(s, json_type_string) ||
	    strcmp(json_object_get_string(s), ec_data_string()) != 0)
		return 0;
	if (obj_len(meta) != 1 || !int_member(meta, "op", op))
		return 0;
	return 1;
}

struct ec_msg *
ec_view_add(struct ec_view *v)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		struct ec_msg *m = realloc(v->m, cap * sizeof(*m));

		if (m == NULL)
			ec_fatal("out of memory");
		v->m = m;
		v->cap = cap;
	}
	memset(&v->m[v->n], 0, sizeof(v->m[0]));
	return &v->m[v->n++];
}

/*
 * One page (a JSON array of message arrays) into view v; stream >= 0 for a
 * stream view (7 elements), -1 for a category view (8).  Returns the number
 * of messages and the last position/global position in *last, or -1.
 */
static long
add_page(struct ec_view *v, json_object *arr, int is_cat, int64_t *last)
{
	size_t n, i, want = is_cat ? 8 : 7, o = is_cat ? 1 : 0;

	if (!json_object_is_type(arr, json_type_array))
		return -1;
	n = json_object_array_length(arr);
	for (i = 0; i < n; i++) {
		json_object *m = json_object_array_get_idx(arr, i), *id, *pos, *gpos;
		struct ec_msg *e;
		uint8_t raw[16];
		const char *ids;

		if (!json_object_is_type(m, json_type_array) || json_object_array_length(m) != want)
			return -1;
		id = json_object_array_get_idx(m, 0);
		pos = json_object_array_get_idx(m, 2 + o);
		gpos = json_object_array_get_idx(m, 3 + o);
		if (!json_object_is_type(id, json_type_string) || !json_object_is_type(pos, json_type_int) ||
		    !json_object_is_type(gpos, json_type_int))
			return -1;
		e = ec_view_add(v);
		ids = json_object_get_string(id);
		snprintf(e->id, sizeof(e->id), "%s", ids);
		e->pos = json_object_get_int64(pos);
		e->gpos = json_object_get_int64(gpos);
		e->op = ec_parse_uuid(ids, raw) == 0 ? ec_id_op(raw) : EC_NONE;
		e->stream = -1;
		if (is_cat) {
			json_object *sn = json_object_array_get_idx(m, 1);

			if (json_object_is_type(sn, json_type_string)) {
				const char *name = json_object_get_string(sn);

				e->stream = ec_stream_index(name);
				e->foreign = e->stream < 0 && ec.cfg.foreign && *ec.cfg.foreign &&
				    strncmp(name, ec.cfg.foreign, strlen(ec.cfg.foreign)) == 0;
			}
		}
		if (e->op != EC_NONE)
			e->content_ok = (uint8_t)content_ok(e->op, json_object_array_get_idx(m, 1 + o),
			    json_object_array_get_idx(m, 4 + o), json_object_array_get_idx(m, 5 + o));
		*last = is_cat ? e->gpos : e->pos;
	}
	return (long)n;
}

static int
read_all(const char *method, const char *name, struct ec_view *v, int is_cat)
{
	char body[512];
	int64_t from = is_cat ? 1 : 0, last = 0;
	json_object *arr;
	long n;
	int bl;

	for (;;) {
		bl = snprintf(body, sizeof(body), "[\"%s\",\"%s\",{\"position\":%lld,\"batchSize\":%d}]",
		    method, name, (long long)from, PAGE);
		arr = rpc(body, (size_t)bl);
		if (arr == NULL)
			return -1;
		n = add_page(v, arr, is_cat, &last);
		json_object_put(arr);
		if (n < 0) {
			fprintf(stderr, "evcheck: final read: %s %s: unexpected answer\n", method, name);
			return -1;
		}
		if (n < PAGE)
			return 0;
		from = last + 1;
	}
}

/* Do the stream reads and the category reads hold the same number of messages? */
static int
views_agree(void)
{
	size_t ns = 0, nc = 0, i;
	int k;

	for (k = 0; k < ec.nstreams; k++)
		ns += ec_stream_view[k].n;
	for (k = 0; k < ec.ncats; k++)
		for (i = 0; i < ec_cat_view[k].n; i++)
			if (ec_cat_view[k].m[i].stream >= 0)
				nc++;
	return ns == nc;
}

static void
views_clear(void)
{
	int k;

	for (k = 0; k < ec.nstreams; k++)
		ec_stream_view[k].n = 0;
	for (k = 0; k < ec.ncats; k++)
		ec_cat_view[k].n = 0;
}

int
ec_final_read(void)
{
	int i, attempt;

	deadline = ec_now_ns() + (uint64_t)(ec.cfg.final_timeout_s * 1e9);
	rcap = 256 * 1024;
	rbuf = malloc(rcap);
	tok = json_tokener_new_ex(64);
	ec_stream_view = calloc((size_t)ec.nstreams, sizeof(*ec_stream_view));
	ec_cat_view = calloc((size_t)ec.ncats, sizeof(*ec_cat_view));
	if (rbuf == NULL || tok == NULL || ec_stream_view == NULL || ec_cat_view == NULL)
		ec_fatal("out of memory");
	/*
	 * A write the run gave up on (timeout) may still commit while we read:
	 * between a stream's read and its category's, the two disagree.  Then
	 * read everything again, a second later, while --final-timeout allows.
	 */
	for (attempt = 0;; attempt++) {
		for (i = 0; i < ec.nstreams; i++)
			if (read_all("stream.get", ec.stream_name[i], &ec_stream_view[i], 0) < 0)
				goto fail;
		for (i = 0; i < ec.ncats; i++)
			if (read_all("category.get", ec.cat_name[i], &ec_cat_view[i], 1) < 0)
				goto fail;
		if (views_agree() || ec_now_ns() + 1000000000u >= deadline || attempt >= 10)
			break;
		if (!ec.cfg.quiet)
			fprintf(stderr, "evcheck: final read: streams and categories disagree "
			    "(a late commit?), reading again\n");
		ec.final_rereads++;
		views_clear();
		usleep(1000 * 1000);
	}
	drop();
	json_tokener_free(tok);
	return 0;
fail:
	drop();
	json_tokener_free(tok);
	return -1;
}
