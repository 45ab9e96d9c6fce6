/*
 * sse_clients.c - the client side of bench/sse-bench (issue 3).
 *
 *   sse-clients hold --port P --n N --token T [--token T ...]
 *       Open N subscriptions (stream idle-<i>, spread over the tokens),
 *       wait for every ": ready", print "READY <n> <failed>" and keep them
 *       open (reading and dropping keepalives) until standard input closes;
 *       then print "CLOSED <n still open>".
 *
 *   sse-clients latency --port P --token T --count M --pids a,b,... [--sub-port P2] [--gap-ms G]
 *       One writer connection and one subscriber connection held by a
 *       different worker (found through /proc), or by another instance
 *       on the same database (--sub-port), then M writes one after
 *       another: prints percentiles of write-sent -> poke-received and of
 *       write-acknowledged -> poke-received, in microseconds (--gap-ms: a
 *       pause before each write, for sporadic writes).
 *
 * Plain sockets, epoll and poll; no libevent, so the numbers do not
 * depend on the code under test.
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port, sub_port, gap_ms;

static double
now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int
dial_port(int p, int nonblock)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	int one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)p);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
dial(int nonblock)
{
	return dial_port(port, nonblock);
}

static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pf = { fd, POLLOUT, 0 };
				poll(&pf, 1, 1000);
				continue;
			}
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ---- hold -------------------------------------------------------------------- */

struct conn {
	int	 fd;
	int	 state;		/* 0 connecting, 1 waiting for ready, 2 ready, 3 dead */
	char	 buf[256];
	size_t	 n;
};

static int
hold(int n, char **tokens, int ntok)
{
	struct conn *c = calloc((size_t)n, sizeof(*c));
	int ep = epoll_create1(EPOLL_CLOEXEC), ready = 0, failed = 0, opened = 0, alive;
	struct epoll_event evs[512];
	char req[1024], junk[65536];
	double t0 = now_us();

	if (!c || ep < 0)
		return 1;
	/* Open in waves, so the listen backlog never overflows. */
	while (ready + failed < n) {
		while (opened < n && opened - ready - failed < 500) {
			struct epoll_event e = { EPOLLIN | EPOLLOUT | EPOLLRDHUP, { .u32 = (uint32_t)opened } };
			c[opened].fd = dial(1);
			if (c[opened].fd < 0) {
				c[opened].state = 3;
				failed++;
			} else
				epoll_ctl(ep, EPOLL_CTL_ADD, c[opened].fd, &e);
			opened++;
		}
		int k = epoll_wait(ep, evs, 512, 5000);
		if (k <= 0) {
			fprintf(stderr, "sse-clients: stalled at %d ready, %d failed\n", ready, failed);
			break;
		}
		for (int i = 0; i < k; i++) {
			struct conn *x = &c[evs[i].data.u32];
			if (x->state == 0 && (evs[i].events & EPOLLOUT)) {
				int idx = (int)evs[i].data.u32;
				struct epoll_event e = { EPOLLIN | EPOLLRDHUP, { .u32 = (uint32_t)idx } };
				int len = snprintf(req, sizeof(req), "GET /subscribe?stream=idle-%d HTTP/1.1\r\n"
				    "Host: bench\r\nAuthorization: Bearer %s\r\n\r\n", idx, tokens[idx % ntok]);
				if (write_all(x->fd, req, (size_t)len) < 0) {
					x->state = 3;
					failed++;
					close(x->fd);
					continue;
				}
				x->state = 1;
				epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &e);
				continue;
			}
			if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
				ssize_t r = read(x->fd, junk, sizeof(junk));
				if (r <= 0) {
					if (r < 0 && errno == EAGAIN)
						continue;
					if (x->state != 3) {
						if (x->state == 2)
							ready--;
						x->state = 3;
						failed++;
						close(x->fd);
					}
					continue;
				}
				if (x->state == 1) {
					size_t m = (size_t)r < sizeof(x->buf) - 1 - x->n ? (size_t)r : sizeof(x->buf) - 1 - x->n;
					memcpy(x->buf + x->n, junk, m);
					x->n += m;
					x->buf[x->n] = '\0';
					if (strstr(x->buf, ": ready\n\n")) {
						x->state = 2;
						ready++;
					} else if (strncmp(x->buf, "HTTP/1.1 200", 12) && x->n >= 12) {
						x->state = 3;
						failed++;
						close(x->fd);
					}
				}
			}
		}
	}
	fprintf(stderr, "sse-clients: %d subscriptions ready in %.1f s, %d failed\n", ready,
	    (now_us() - t0) / 1e6, failed);
	printf("READY %d %d\n", ready, failed);
	fflush(stdout);

	/* Hold until standard input closes. */
	{
		struct epoll_event e = { EPOLLIN, { .u32 = UINT32_MAX } };
		epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e);
	}
	for (;;) {
		int k = epoll_wait(ep, evs, 512, -1);
		int stop = 0;
		for (int i = 0; i < k; i++) {
			if (evs[i].data.u32 == UINT32_MAX) {
				if (read(0, junk, sizeof(junk)) <= 0)
					stop = 1;
				continue;
			}
			struct conn *x = &c[evs[i].data.u32];
			ssize_t r = read(x->fd, junk, sizeof(junk));
			if (r == 0 || (r < 0 && errno != EAGAIN)) {
				if (x->state == 2)
					ready--;
				x->state = 3;
				close(x->fd);
			}
		}
		if (stop)
			break;
	}
	alive = 0;
	for (int i = 0; i < n; i++)
		if (c[i].state == 2) {
			alive++;
			close(c[i].fd);
		}
	printf("CLOSED %d\n", alive);
	return 0;
}

/* ---- which worker holds a connection --------------------------------------------- */

static unsigned long
conn_inode(int fd)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	char line[512];
	FILE *f;
	unsigned long ino = 0;
	unsigned cport;

	if (getsockname(fd, (struct sockaddr *)&a, &al) < 0)
		return 0;
	cport = ntohs(a.sin_port);
	if (!(f = fopen("/proc/net/tcp", "r")))
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned lp, rp;
		unsigned long in;
		if (sscanf(line, " %*d: %*8X:%X %*8X:%X %*X %*X:%*X %*X:%*X %*X %*u %*u %lu", &lp, &rp,
		    &in) == 3 && lp == (unsigned)port && rp == cport) {
			ino = in;
			break;
		}
	}
	fclose(f);
	return ino;
}

static long
conn_worker(int fd, long *pids, int npids)
{
	unsigned long ino = conn_inode(fd);
	char want[64], path[64], l[64];

	if (!ino)
		return -1;
	snprintf(want, sizeof(want), "socket:[%lu]", ino);
	for (int i = 0; i < npids; i++) {
		DIR *d;
		struct dirent *e;
		snprintf(path, sizeof(path), "/proc/%ld/fd", pids[i]);
		if (!(d = opendir(path)))
			continue;
		while ((e = readdir(d))) {
			char p2[512];
			ssize_t n;
			snprintf(p2, sizeof(p2), "%s/%s", path, e->d_name);
			n = readlink(p2, l, sizeof(l) - 1);
			if (n > 0) {
				l[n] = '\0';
				if (!strcmp(l, want)) {
					closedir(d);
					return pids[i];
				}
			}
		}
		closedir(d);
	}
	return -1;
}

/* ---- latency -------------------------------------------------------------------- */

static int
cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
pct(double *v, int n, double p)
{
	int i = (int)(p / 100.0 * (n - 1) + 0.5);
	return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* Read from fd until `needle` has been seen `times` times in total; 0 ok. */
static int
wait_text(int fd, char *acc, size_t cap, size_t *n, const char *needle, int times, int ms)
{
	double end = now_us() + ms * 1000.0;

	for (;;) {
		int seen = 0;
		for (char *p = acc; (p = strstr(p, needle)); p += strlen(needle))
			seen++;
		if (seen >= times)
			return 0;
		struct pollfd pf = { fd, POLLIN, 0 };
		int left = (int)((end - now_us()) / 1000);
		if (left <= 0 || poll(&pf, 1, left) <= 0)
			return -1;
		ssize_t r = read(fd, acc + *n, cap - 1 - *n);
		if (r <= 0)
			return -1;
		*n += (size_t)r;
		acc[*n] = '\0';
	}
}

static int
latency(const char *token, int count, long *pids, int npids)
{
	int w = dial(0), s = -1, tries = 0;
	long ww = w >= 0 ? conn_worker(w, pids, npids) : -1, sw = -1;
	static char acc[1 << 20];
	size_t n = 0;
	double *a = calloc((size_t)count, sizeof(double)), *b = calloc((size_t)count, sizeof(double));
	char req[2048], resp[8192], body[256], stream[64];

	/* A stream of our own: nothing to catch up. */
	snprintf(stream, sizeof(stream), "lat-%ld%ld", (long)getpid(), (long)time(NULL));
	snprintf(body, sizeof(body), "[\"stream.write\",\"%s\",{\"type\":\"T\",\"data\":{}}]", stream);

	if (w < 0 || ww < 0 || !a || !b) {
		fprintf(stderr, "sse-clients: could not place the writer connection\n");
		return 1;
	}
	while (tries++ < 100) {
		s = dial_port(sub_port, 0);
		if (s < 0)
			return 1;
		n = 0;
		snprintf(req, sizeof(req), "GET /subscribe?stream=%s HTTP/1.1\r\n"
		    "Host: bench\r\nAuthorization: Bearer %s\r\n\r\n", stream, token);
		write_all(s, req, strlen(req));
		if (wait_text(s, acc, sizeof(acc), &n, ": ready\n\n", 1, 10000) < 0) {
			fprintf(stderr, "sse-clients: no \": ready\" within 10 s\n");
			return 1;
		}
		if (sub_port != port)
			break;	/* another instance: any of its workers */
		sw = conn_worker(s, pids, npids);
		if (sw >= 0 && sw != ww)
			break;
		close(s);
		s = -1;
	}
	if (s < 0) {
		fprintf(stderr, "sse-clients: no subscriber landed on another worker\n");
		return 1;
	}
	if (sub_port == port)
		fprintf(stderr, "sse-clients: writer on worker pid %ld, subscriber on worker pid %ld\n",
		    ww, sw);
	else
		fprintf(stderr, "sse-clients: writer on port %d, subscriber on another instance (port %d)\n",
		    port, sub_port);
	n = 0;
	acc[0] = '\0';
	for (int i = 0; i < count; i++) {
		int len = snprintf(req, sizeof(req), "POST /rpc HTTP/1.1\r\nHost: bench\r\n"
		    "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
		    "Content-Length: %zu\r\n\r\n%s", token, strlen(body), body);
		double t0, tack = 0, tpoke = 0;
		size_t rn = 0;
		int got_resp = 0, got_poke = 0;

		if (gap_ms > 0) {
			struct timespec gap = { gap_ms / 1000, (long)(gap_ms % 1000) * 1000000L };
			nanosleep(&gap, NULL);
		}
		t0 = now_us();

		write_all(w, req, (size_t)len);
		while (!got_resp || !got_poke) {
			struct pollfd pf[2] = { { w, POLLIN, 0 }, { s, POLLIN, 0 } };
			if (poll(pf, 2, 5000) <= 0) {
				fprintf(stderr, "sse-clients: timeout at write %d (resp %d poke %d)\n", i,
				    got_resp, got_poke);
				return 1;
			}
			if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t r = read(w, resp + rn, sizeof(resp) - 1 - rn);
				if (r <= 0) {
					fprintf(stderr, "sse-clients: writer connection closed at write %d: %s\n",
					    i, r < 0 ? strerror(errno) : "EOF");
					return 1;
				}
				rn += (size_t)r;
				resp[rn] = '\0';
				char *h = strstr(resp, "\r\n\r\n");
				char *cl = strstr(resp, "Content-Length: ");
				if (h && cl && rn >= (size_t)(h + 4 - resp) + strtoul(cl + 16, NULL, 10)) {
					got_resp = 1;
					tack = now_us();
				}
			}
			if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t r = read(s, acc + n, sizeof(acc) - 1 - n);
				if (r <= 0) {
					fprintf(stderr, "sse-clients: subscription closed at write %d: %s\n",
					    i, r < 0 ? strerror(errno) : "EOF");
					return 1;
				}
				n += (size_t)r;
				acc[n] = '\0';
				if (strstr(acc, "event: poke") && strstr(acc, "}\n\n")) {
					got_poke = 1;
					tpoke = now_us();
					n = 0;
					acc[0] = '\0';
				}
			}
		}
		a[i] = tpoke - t0;
		b[i] = tpoke - tack;
	}
	qsort(a, (size_t)count, sizeof(double), cmp_d);
	qsort(b, (size_t)count, sizeof(double), cmp_d);
	printf("LATENCY n=%d send_to_poke_us p50=%.0f p99=%.0f max=%.0f ack_to_poke_us p50=%.0f p99=%.0f max=%.0f\n",
	    count, pct(a, count, 50), pct(a, count, 99), a[count - 1], pct(b, count, 50),
	    pct(b, count, 99), b[count - 1]);
	return 0;
}

int
main(int argc, char **argv)
{
	char *tokens[64];
	int ntok = 0, n = 0, count = 1000, npids = 0;
	long pids[256];
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (argc < 2) {
		fprintf(stderr, "usage: sse-clients hold|latency [options]\n");
		return 2;
	}
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--port"))
			port = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--sub-port"))
			sub_port = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--gap-ms"))
			gap_ms = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--n"))
			n = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--count"))
			count = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--token") && ntok < 64)
			tokens[ntok++] = argv[i + 1];
		else if (!strcmp(argv[i], "--pids")) {
			for (char *p = strtok(argv[i + 1], ","); p && npids < 256; p = strtok(NULL, ","))
				pids[npids++] = atol(p);
		}
	}
	if (!port || !ntok) {
		fprintf(stderr, "sse-clients: --port and --token are required\n");
		return 2;
	}
	if (!sub_port)
		sub_port = port;
	if (!strcmp(argv[1], "hold"))
		return hold(n, tokens, ntok);
	if (!strcmp(argv[1], "latency"))
		return latency(tokens[0], count, pids, npids);
	fprintf(stderr, "sse-clients: unknown mode %s\n", argv[1]);
	return 2;
}
