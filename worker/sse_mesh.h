/*
 * sse_mesh.h - how pokes leave the worker that committed the write
 * (issue 3): to the other workers of the instance over unix datagrams
 * (the mesh), to other instances on the same database through PostgreSQL
 * NOTIFY, and the per-namespace subscription counts the instance's
 * workers share.  sse.c is the only user.
 *
 * A poke travels as a record: u32 nslen, u32 slen, i64 pos, i64 gpos,
 * then the namespace id and the stream name (no NULs), in host order
 * (only processes of one machine read them).
 */
#ifndef EVENTODB_SSE_MESH_H
#define EVENTODB_SSE_MESH_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

#define SSM_REC_HDR	24

typedef void (*ssm_deliver_fn)(const char *ns, size_t nslen, const char *stream, size_t slen,
    int64_t pos, int64_t gpos);

/* Master, before forking: the instance's shared memory.  0 or -1. */
int ssm_shm_init(void);

/*
 * Worker: join the mesh, LISTEN for other instances' pokes; deliver is
 * called for every poke that reaches this worker from elsewhere.
 */
void ssm_init(struct event_base *base, int port, int notify, ssm_deliver_fn deliver);

/* Send records (committed writes of this worker) to the other workers and instances. */
void ssm_publish(const unsigned char *recs, size_t len);

/* Leave the mesh (the worker is stopping). */
void ssm_leave(void);

/*
 * Subscription counts across the instance: the slot of namespace `ns`
 * (-1 if none), the instance-wide count in it (-1 if counts are not
 * shared), and adding to this worker's share.
 */
int ssm_ns_slot(const char *ns);
long ssm_ns_count(int slot);
void ssm_ns_add(int slot, int d);

/* Record layout helpers. */
size_t ssm_rec_put(unsigned char *dst, const char *ns, uint32_t nslen, const char *stream,
    uint32_t slen, int64_t pos, int64_t gpos);
size_t ssm_rec_get(const unsigned char *src, const char **ns, size_t *nslen, const char **stream,
    size_t *slen, int64_t *pos, int64_t *gpos);

#endif
