/*
 * sse_mesh.c - pokes across processes (see sse_mesh.h).
 *
 * Same instance: every worker binds an abstract unix datagram socket
 * named after its instance (port and a random nonce from the master) and
 * a random member id, then claims an entry in the member table of the
 * shared segment.  A publisher sends each other member one datagram per
 * loop turn with every record of that turn (connected sockets, so a busy
 * peer makes send() fail with EAGAIN and the records wait, in order, for
 * EPOLLOUT instead of being lost).  Receivers check the sender's uid
 * (SCM_CREDENTIALS).  A member whose socket is gone (a crashed worker) is
 * removed by whoever notices; a worker that starts probes the table.
 *
 * Other instances: records go out as NOTIFY eventodb_poke payloads,
 * {"i":"<instance>","p":[[ns,stream,pos,gpos],...]}, up to 7900 bytes
 * each and up to 8 per round trip, on the worker's LISTEN connection with
 * one round trip in flight and, sustained, at most one per
 * NOTIFY_INTERVAL_US (a token bucket: sporadic writes go out at once):
 * after commit, outside every write transaction, batching more as the
 * rate grows.  (Measured on PostgreSQL 15 with durable commits: a NOTIFY inside
 * each write transaction serialises commits on the notification lock and
 * cut write throughput by two thirds; unthrottled NOTIFY transactions
 * beside the writes cost a quarter; 200 a second cost nothing visible.)
 * Instances skip their own payloads (every worker of the instance already
 * got them by the mesh).
 * Pokes that cannot be sent (no connection, full queue) are dropped:
 * they are hints.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "db.h"
#include "json.h"
#include "log.h"
#include "sse_mesh.h"
#include "token.h"

#define POKE_CHANNEL	"eventodb_poke"
#define NOTIFY_PAYLOAD_MAX 7900		/* PostgreSQL: payload < 8000 bytes */
#define NOTIFY_PER_QUERY 8
#define NOTIFY_QUEUE_MAX 256		/* payloads waiting (about 2 MiB) */
#define NOTIFY_INTERVAL_US 5000		/* sustained: one NOTIFY round trip per 5 ms */
#define NOTIFY_BURST	10		/* but this many at once after a quiet spell */

#define MESH_MAGIC	0x45565350u	/* "EVSP" */
#define MESH_DGRAM_MAX	(64 * 1024)
#define MESH_PEND_MAX	(4 * 1024 * 1024)
#define MESH_MEMBERS	256
#define REC_HDR		SSM_REC_HDR
#define NS_SLOTS	4096

/*
 * Shared by the workers of one instance.  Mesh members are worker
 * processes, not slots (during a reload two generations overlap): a
 * worker claims a free entry after binding its socket and clears it when
 * it stops.  counts[e][i] is what member e holds in namespace slot i.
 */
struct sse_shared {
	uint64_t	 nonce;			/* this instance */
	uint32_t	 nmembers;		/* entries ever used (a bound for scans) */
	uint32_t	 pad;
	uint64_t	 member[MESH_MEMBERS];	/* 0 = free, else the member's id */
	uint64_t	 nskey[NS_SLOTS];	/* 0 = free */
	int32_t		 counts[MESH_MEMBERS][NS_SLOTS];
};

struct peer {
	uint64_t	 id;		/* member id connected to, 0 = none */
	int		 fd;
	struct event	*wev;
	unsigned char	*pend;		/* records not yet sent */
	size_t		 npend, cappend;
	int		 dropped;
};

static struct sse_shared *shared;
static struct event_base *ssm_base;
static ssm_deliver_fn ssm_deliver;
static int mesh_port, notify_on;
static uint64_t nonce;

/* Mesh. */
static int mesh_fd = -1, my_member = -1;
static uint64_t my_id;
static struct event *mesh_ev;
static struct peer peers[MESH_MEMBERS];
static unsigned char rxbuf[MESH_DGRAM_MAX + 64];

/* NOTIFY. */
static char *nt_queue[NOTIFY_QUEUE_MAX];
static int nt_n, nt_inflight, nt_dropped;
static struct evbuffer *nt_cur;		/* payload being built */
static int nt_cur_n;
static struct json_doc nt_doc;
static struct event *nt_timer;		/* the next NOTIFY, once a token is back */
static uint64_t nt_tokens_at;		/* token bucket: full at this monotonic us */

static uint64_t
fnv64(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h ? h : 1;
}

size_t
ssm_rec_put(unsigned char *dst, const char *ns, uint32_t nslen, const char *stream, uint32_t slen,
    int64_t pos, int64_t gpos)
{
	memcpy(dst, &nslen, 4);
	memcpy(dst + 4, &slen, 4);
	memcpy(dst + 8, &pos, 8);
	memcpy(dst + 16, &gpos, 8);
	memcpy(dst + REC_HDR, ns, nslen);
	memcpy(dst + REC_HDR + nslen, stream, slen);
	return REC_HDR + (size_t)nslen + slen;
}

size_t
ssm_rec_get(const unsigned char *src, const char **ns, size_t *nslen, const char **stream,
    size_t *slen, int64_t *pos, int64_t *gpos)
{
	uint32_t a, b;

	memcpy(&a, src, 4);
	memcpy(&b, src + 4, 4);
	memcpy(pos, src + 8, 8);
	memcpy(gpos, src + 16, 8);
	*ns = (const char *)src + REC_HDR;
	*nslen = a;
	*stream = (const char *)src + REC_HDR + a;
	*slen = b;
	return REC_HDR + (size_t)a + b;
}

/* ---- shared segment -------------------------------------------------------- */

int
ssm_shm_init(void)
{
	void *p = mmap(NULL, sizeof(struct sse_shared), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		log_warn("could not map the subscription segment: %s", strerror(errno));
		return -1;
	}
	shared = p;
	if (tok_random(&shared->nonce, sizeof(shared->nonce)) < 0)
		shared->nonce = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
	return 0;
}

/* Slot of namespace `ns` in the count table (claimed if new), or -1. */
int
ssm_ns_slot(const char *ns)
{
	uint64_t k = fnv64(ns);
	unsigned i = (unsigned)(k % NS_SLOTS);

	if (!shared)
		return -1;
	for (int n = 0; n < NS_SLOTS; n++, i = (i + 1) % NS_SLOTS) {
		uint64_t cur = __atomic_load_n(&shared->nskey[i], __ATOMIC_ACQUIRE);
		if (cur == k)
			return (int)i;
		if (cur == 0) {
			uint64_t zero = 0;
			if (__atomic_compare_exchange_n(&shared->nskey[i], &zero, k, 0,
			    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) || zero == k)
				return (int)i;
		}
	}
	return -1;
}

/*
 * The slot of `ns` without claiming one: the slot, -2 if the namespace
 * has none (nobody in the instance ever subscribed in it), -1 if the
 * table is full (then nothing is known).
 */
static int
ssm_ns_slot_find(const char *ns)
{
	uint64_t k = fnv64(ns);
	unsigned i = (unsigned)(k % NS_SLOTS);

	for (int n = 0; n < NS_SLOTS; n++, i = (i + 1) % NS_SLOTS) {
		uint64_t cur = __atomic_load_n(&shared->nskey[i], __ATOMIC_SEQ_CST);
		if (cur == k)
			return (int)i;
		if (cur == 0)
			return -2;
	}
	return -1;
}

/* Subscriptions held in namespace slot i by every member of the instance. */
long
ssm_ns_count(int i)
{
	long n = 0;
	uint32_t lim;

	if (!shared || my_member < 0 || i < 0)
		return -1;
	lim = __atomic_load_n(&shared->nmembers, __ATOMIC_ACQUIRE);

	for (uint32_t e = 0; e < lim && e < MESH_MEMBERS; e++)
		if (__atomic_load_n(&shared->member[e], __ATOMIC_ACQUIRE) != 0)
			n += __atomic_load_n(&shared->counts[e][i], __ATOMIC_RELAXED);
	return n;
}

void
ssm_ns_add(int i, int d)
{
	if (i >= 0 && my_member >= 0)
		__atomic_add_fetch(&shared->counts[my_member][i], d, __ATOMIC_SEQ_CST);
}

/* ---- the mesh ------------------------------------------------------------ */

static socklen_t
mesh_addr(struct sockaddr_un *a, uint64_t id)
{
	int n;

	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "eventodbd-sse/%d/%016llx/%016llx",
	    mesh_port, (unsigned long long)nonce, (unsigned long long)id);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static void
peer_close(struct peer *p)
{
	if (p->wev) {
		event_free(p->wev);
		p->wev = NULL;
	}
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	p->id = 0;
	p->npend = 0;
}

/* The member behind entry e is gone: free its entry. */
static void
member_gone(int e, uint64_t id)
{
	uint64_t want = id;

	__atomic_compare_exchange_n(&shared->member[e], &want, 0, 0, __ATOMIC_ACQ_REL,
	    __ATOMIC_ACQUIRE);
	peer_close(&peers[e]);
}

/* Send pending records to peer e, in datagrams of whole records. */
static void peer_flush(int e);

static void
peer_write_cb(evutil_socket_t fd, short what, void *arg)
{
	peer_flush((int)(intptr_t)arg);
}

static int
peer_connect(int e, uint64_t id)
{
	struct peer *p = &peers[e];
	struct sockaddr_un a;
	socklen_t len;

	peer_close(p);
	p->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->fd < 0)
		return -1;
	len = mesh_addr(&a, id);
	if (connect(p->fd, (struct sockaddr *)&a, len) < 0) {
		int err = errno;
		close(p->fd);
		p->fd = -1;
		if (err == ECONNREFUSED || err == ENOENT)
			member_gone(e, id);
		return -1;
	}
	p->id = id;
	p->wev = event_new(ssm_base, p->fd, EV_WRITE, peer_write_cb, (void *)(intptr_t)e);
	return 0;
}

static size_t
rec_len(const unsigned char *r)
{
	uint32_t a, b;

	memcpy(&a, r, 4);
	memcpy(&b, r + 4, 4);
	return REC_HDR + (size_t)a + b;
}

static void
peer_flush(int e)
{
	struct peer *p = &peers[e];
	unsigned char dg[MESH_DGRAM_MAX];
	size_t off = 0;
	uint32_t magic = MESH_MAGIC;

	while (off < p->npend && p->fd >= 0) {
		size_t n = 4;
		memcpy(dg, &magic, 4);
		while (off < p->npend) {
			size_t l = rec_len(p->pend + off);
			if (n + l > sizeof(dg)) {
				if (n == 4) {	/* a record too large for any datagram */
					off += l;
					continue;
				}
				break;
			}
			memcpy(dg + n, p->pend + off, l);
			n += l;
			off += l;
		}
		if (n == 4)
			break;
		if (send(p->fd, dg, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* The peer is busy: keep the rest, wait until it reads. */
				size_t back = n - 4;
				off -= back;
				if (p->wev)
					event_add(p->wev, NULL);
				break;
			}
			if (errno == ECONNREFUSED || errno == ENOTCONN) {
				member_gone(e, p->id);
				return;
			}
			log_debug("mesh send to member %d failed: %s", e, strerror(errno));
		}
	}
	if (off > 0 && p->fd >= 0) {
		memmove(p->pend, p->pend + off, p->npend - off);
		p->npend -= off;
	}
}

/* Queue the outbox for every other member and send what we can. */
/* Append one record to peer e's queue (connecting first if needed). */
static void
peer_queue(int e, uint64_t id, const unsigned char *rec, size_t len)
{
	struct peer *p = &peers[e];

	if ((p->id != id || p->fd < 0) && peer_connect(e, id) < 0)
		return;
	if (p->npend + len > MESH_PEND_MAX) {
		if (!p->dropped++)
			log_warn("worker mesh: member %d is not reading; pokes dropped", e);
		return;
	}
	p->dropped = 0;
	if (p->npend + len > p->cappend) {
		size_t cap = p->cappend ? p->cappend : 65536;
		unsigned char *n;
		while (cap < p->npend + len)
			cap *= 2;
		if (!(n = realloc(p->pend, cap)))
			return;
		p->pend = n;
		p->cappend = cap;
	}
	memcpy(p->pend + p->npend, rec, len);
	p->npend += len;
}

/*
 * Each record goes only to the members with a subscription in its
 * namespace (to all when the count table is full).  A subscription is
 * counted (sequentially consistent) before its catch-up read is sent,
 * and this check runs after the write committed: a member skipped here
 * finds the message in its catch-up.
 */
static void
mesh_publish(const unsigned char *recs, size_t len)
{
	uint32_t lim;
	size_t off;
	int slot = -1;
	char lastns[256] = "";

	if (!shared || my_member < 0)
		return;
	lim = __atomic_load_n(&shared->nmembers, __ATOMIC_SEQ_CST);
	for (uint32_t e = 0; e < lim && e < MESH_MEMBERS; e++)
		if (__atomic_load_n(&shared->member[e], __ATOMIC_ACQUIRE) == 0 && peers[e].fd >= 0)
			peer_close(&peers[e]);
	for (off = 0; off < len;) {
		const char *ns, *st;
		size_t nl, sl, rl;
		int64_t pos, gpos;

		rl = ssm_rec_get(recs + off, &ns, &nl, &st, &sl, &pos, &gpos);
		if (nl >= sizeof(lastns) || memcmp(lastns, ns, nl) != 0 || lastns[nl] != '\0') {
			char id[256];
			if (nl < sizeof(id)) {
				memcpy(id, ns, nl);
				id[nl] = '\0';
				slot = ssm_ns_slot_find(id);
				memcpy(lastns, id, nl + 1);
			} else {
				slot = -1;
				lastns[0] = '\0';
			}
		}
		for (uint32_t e = 0; e < lim && e < MESH_MEMBERS && slot != -2; e++) {
			uint64_t id = __atomic_load_n(&shared->member[e], __ATOMIC_ACQUIRE);
			if ((int)e == my_member || id == 0)
				continue;
			if (slot >= 0 && __atomic_load_n(&shared->counts[e][slot], __ATOMIC_SEQ_CST) <= 0)
				continue;
			peer_queue((int)e, id, recs + off, rl);
		}
		off += rl;
	}
	for (uint32_t e = 0; e < lim && e < MESH_MEMBERS; e++) {
		struct peer *p = &peers[e];
		if (p->npend > 0 && p->wev && !event_pending(p->wev, EV_WRITE, NULL))
			peer_flush((int)e);
	}
}

static void
mesh_read_cb(evutil_socket_t fd, short what, void *arg)
{
	for (int i = 0; i < 64; i++) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(struct ucred))];
		} ctl;
		struct iovec iov = { rxbuf, sizeof(rxbuf) };
		struct msghdr m = { 0 };
		struct cmsghdr *c;
		struct ucred *cred = NULL;
		ssize_t n;
		size_t off;
		uint32_t magic;

		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		m.msg_control = ctl.buf;
		m.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(fd, &m, MSG_DONTWAIT);
		if (n < 0)
			return;
		for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
				cred = (struct ucred *)CMSG_DATA(c);
		if (!cred || cred->uid != geteuid() || n < 4)
			continue;	/* not from one of our workers */
		memcpy(&magic, rxbuf, 4);
		if (magic != MESH_MAGIC)
			continue;
		for (off = 4; off + REC_HDR <= (size_t)n;) {
			uint32_t nslen, slen;
			int64_t pos, gpos;
			memcpy(&nslen, rxbuf + off, 4);
			memcpy(&slen, rxbuf + off + 4, 4);
			memcpy(&pos, rxbuf + off + 8, 8);
			memcpy(&gpos, rxbuf + off + 16, 8);
			if (off + REC_HDR + (size_t)nslen + slen > (size_t)n)
				break;
			ssm_deliver((const char *)rxbuf + off + REC_HDR, nslen,
			    (const char *)rxbuf + off + REC_HDR + nslen, slen, pos, gpos);
			off += REC_HDR + (size_t)nslen + slen;
		}
	}
}

static void
mesh_join(void)
{
	struct sockaddr_un a;
	socklen_t len;
	int one = 1, rcv = 1024 * 1024;

	if (!shared)
		return;
	if (tok_random(&my_id, sizeof(my_id)) < 0 || my_id == 0)
		my_id = ((uint64_t)getpid() << 20) | 1;
	mesh_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (mesh_fd < 0) {
		log_warn("worker mesh: could not create a socket: %s", strerror(errno));
		return;
	}
	setsockopt(mesh_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	setsockopt(mesh_fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	len = mesh_addr(&a, my_id);
	if (bind(mesh_fd, (struct sockaddr *)&a, len) < 0) {
		log_warn("worker mesh: could not bind: %s", strerror(errno));
		close(mesh_fd);
		mesh_fd = -1;
		return;
	}
	/* Entries of members that died without leaving are freed on the way. */
	for (int e = 0; e < MESH_MEMBERS; e++) {
		uint64_t cur = __atomic_load_n(&shared->member[e], __ATOMIC_ACQUIRE);
		if (cur != 0) {
			peer_connect(e, cur);
			cur = __atomic_load_n(&shared->member[e], __ATOMIC_ACQUIRE);
		}
		if (cur == 0 && __atomic_compare_exchange_n(&shared->member[e], &cur, my_id, 0,
		    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			/* Ours now; counts a dead owner may have left are void. */
			for (int i = 0; i < NS_SLOTS; i++)
				__atomic_store_n(&shared->counts[e][i], 0, __ATOMIC_RELAXED);
			my_member = e;
			break;
		}
	}
	if (my_member < 0) {
		log_warn("worker mesh: no free member entry");
		close(mesh_fd);
		mesh_fd = -1;
		return;
	}
	for (;;) {
		uint32_t nm = __atomic_load_n(&shared->nmembers, __ATOMIC_ACQUIRE);
		if (nm > (uint32_t)my_member ||
		    __atomic_compare_exchange_n(&shared->nmembers, &nm, (uint32_t)my_member + 1, 0,
		    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			break;
	}
	mesh_ev = event_new(ssm_base, mesh_fd, EV_READ | EV_PERSIST, mesh_read_cb, NULL);
	event_add(mesh_ev, NULL);
}

void
ssm_leave(void)
{
	if (my_member >= 0) {
		uint64_t want = my_id;
		__atomic_compare_exchange_n(&shared->member[my_member], &want, 0, 0,
		    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
		my_member = -1;
	}
	if (mesh_ev) {
		event_free(mesh_ev);
		mesh_ev = NULL;
	}
	if (mesh_fd >= 0)
		close(mesh_fd);
	mesh_fd = -1;
	for (int e = 0; e < MESH_MEMBERS; e++)
		if (peers[e].fd >= 0)
			peer_close(&peers[e]);
}

/* ---- NOTIFY between instances ----------------------------------------------- */

static void nt_send(void);

static void
nt_done(void *arg, int ok)
{
	nt_inflight = 0;
	if (!ok)
		log_debug("poke NOTIFY failed");
	nt_send();
}

/* Close the payload being built and queue it. */
static void
nt_close_cur(void)
{
	size_t len;
	char *p;

	if (!nt_cur || nt_cur_n == 0)
		return;
	evbuffer_add(nt_cur, "]}", 2);
	len = evbuffer_get_length(nt_cur);
	if (nt_n == NOTIFY_QUEUE_MAX || !(p = malloc(len + 1))) {
		if (!nt_dropped++)
			log_warn("poke NOTIFY queue full: pokes for other instances dropped");
		evbuffer_drain(nt_cur, len);
	} else {
		evbuffer_remove(nt_cur, p, len);
		p[len] = '\0';
		nt_queue[nt_n++] = p;
		nt_dropped = 0;
	}
	nt_cur_n = 0;
}

static void
nt_add(const char *ns, size_t nslen, const char *stream, size_t slen, int64_t pos, int64_t gpos)
{
	static struct evbuffer *one;
	size_t elen;

	if (!one && !(one = evbuffer_new()))
		return;
	if (!nt_cur && !(nt_cur = evbuffer_new()))
		return;
	evbuffer_add(one, "[", 1);
	json_write_str(one, ns, nslen);
	evbuffer_add(one, ",", 1);
	json_write_str(one, stream, slen);
	evbuffer_add_printf(one, ",%lld,%lld]", (long long)pos, (long long)gpos);
	elen = evbuffer_get_length(one);
	if (elen + 40 > NOTIFY_PAYLOAD_MAX) {
		log_debug("poke for a stream name of %zu bytes not sent to other instances", slen);
		evbuffer_drain(one, elen);
		return;
	}
	if (nt_cur_n > 0 && evbuffer_get_length(nt_cur) + elen + 3 > NOTIFY_PAYLOAD_MAX)
		nt_close_cur();
	if (nt_cur_n == 0)
		evbuffer_add_printf(nt_cur, "{\"i\":\"%016llx\",\"p\":[", (unsigned long long)nonce);
	else
		evbuffer_add(nt_cur, ",", 1);
	evbuffer_add_buffer(nt_cur, one);
	nt_cur_n++;
}

static uint64_t
now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void
nt_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	nt_send();
}

static void
nt_send(void)
{
	struct evbuffer *sql;
	uint64_t now;
	int k = 0;

	if (nt_inflight || (nt_timer && evtimer_pending(nt_timer, NULL)))
		return;
	nt_close_cur();
	if (nt_n == 0)
		return;
	/*
	 * Token bucket, kept as the time it will be full again: a NOTIFY
	 * costs NOTIFY_INTERVAL_US; it may go while the bucket is at most
	 * NOTIFY_BURST - 1 tokens short.
	 */
	now = now_us();
	if (nt_tokens_at < now)
		nt_tokens_at = now;
	if (nt_timer && nt_tokens_at - now > (uint64_t)(NOTIFY_BURST - 1) * NOTIFY_INTERVAL_US) {
		uint64_t wait = nt_tokens_at - now - (uint64_t)(NOTIFY_BURST - 1) * NOTIFY_INTERVAL_US;
		struct timeval tv = { (time_t)(wait / 1000000u), (suseconds_t)(wait % 1000000u) };
		evtimer_add(nt_timer, &tv);
		return;
	}
	if (!(sql = evbuffer_new()))
		return;
	nt_tokens_at += NOTIFY_INTERVAL_US;
	while (k < nt_n && k < NOTIFY_PER_QUERY) {
		char tag[24];
		int t = 0;
		/* A dollar quote whose tag the payload does not contain. */
		do
			snprintf(tag, sizeof(tag), "$p%d$", t++);
		while (strstr(nt_queue[k], tag));
		evbuffer_add_printf(sql, "NOTIFY " POKE_CHANNEL ", %s%s%s;", tag, nt_queue[k], tag);
		k++;
	}
	evbuffer_add(sql, "", 1);
	for (int i = 0; i < k; i++)
		free(nt_queue[i]);
	memmove(nt_queue, nt_queue + k, sizeof(nt_queue[0]) * (size_t)(nt_n - k));
	nt_n -= k;
	nt_inflight = 1;
	if (db_listen_send((const char *)evbuffer_pullup(sql, -1), nt_done, NULL) < 0) {
		/* No LISTEN connection right now: these pokes are lost (hints). */
		nt_inflight = 0;
		log_debug("poke NOTIFY not sent: no database connection");
	}
	evbuffer_free(sql);
}

/* A NOTIFY from some instance: deliver unless it is our own. */
static void
nt_receive(const char *payload)
{
	char own[32];
	uint32_t arr, e;

	if (!payload)
		return;	/* (re)connected: pokes may have been missed; they are hints */
	snprintf(own, sizeof(own), "{\"i\":\"%016llx\"", (unsigned long long)nonce);
	if (strncmp(payload, own, strlen(own)) == 0)
		return;
	if (json_parse(&nt_doc, payload, strlen(payload)) < 0 ||
	    json_type_of(&nt_doc, 0) != JSON_OBJECT)
		return;
	arr = json_get(&nt_doc, 0, "p");
	if (!arr || json_type_of(&nt_doc, arr) != JSON_ARRAY)
		return;
	for (uint32_t i = 0; (e = json_at(&nt_doc, arr, i)) != 0; i++) {
		uint32_t a = json_at(&nt_doc, e, 0), b = json_at(&nt_doc, e, 1);
		uint32_t c = json_at(&nt_doc, e, 2), d = json_at(&nt_doc, e, 3);
		size_t nl, sl;
		const char *ns, *st;

		if (!a || !b || !c || !d || json_type_of(&nt_doc, a) != JSON_STRING ||
		    json_type_of(&nt_doc, b) != JSON_STRING || json_type_of(&nt_doc, c) != JSON_NUMBER ||
		    json_type_of(&nt_doc, d) != JSON_NUMBER)
			continue;
		ns = json_str(&nt_doc, a, &nl);
		st = json_str(&nt_doc, b, &sl);
		ssm_deliver(ns, nl, st, sl, json_int(&nt_doc, c), json_int(&nt_doc, d));
	}
}

/* ---- the worker's side --------------------------------------------------------- */

void
ssm_publish(const unsigned char *recs, size_t len)
{
	size_t off = 0;

	mesh_publish(recs, len);
	if (!notify_on)
		return;
	while (off < len) {
		const char *ns, *st;
		size_t nl, sl;
		int64_t pos, gpos;
		off += ssm_rec_get(recs + off, &ns, &nl, &st, &sl, &pos, &gpos);
		nt_add(ns, nl, st, sl, pos, gpos);
	}
	nt_send();
}

void
ssm_init(struct event_base *base, int port, int notify, ssm_deliver_fn deliver)
{
	ssm_base = base;
	mesh_port = port;
	notify_on = notify;
	ssm_deliver = deliver;
	for (int e = 0; e < MESH_MEMBERS; e++)
		peers[e].fd = -1;
	if (shared)
		nonce = shared->nonce;
	else if (tok_random(&nonce, sizeof(nonce)) < 0)
		nonce = (uint64_t)getpid();
	json_doc_init(&nt_doc);
	nt_timer = evtimer_new(base, nt_timer_cb, NULL);
	mesh_join();
	db_listen(POKE_CHANNEL, nt_receive);
}
