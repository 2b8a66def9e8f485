/* l7scope socket capture (bcc): plaintext of TCP socket syscalls, with connection lifecycle.
 *
 * sock:sock_{send,recv}_length: fire inside every socket send/receive with the struct sock * and the
 *         byte count. For TCP over IPv4/IPv6 the syscall and its buffer are read from the thread's
 *         saved user registers, and ret > 0 -> the payload is copied in chunks into the ring, each
 *         chunk with its byte position. No program runs on the hot syscalls' entry or exit, so non-socket
 *         I/O and failed (EAGAIN) reads cost nothing beyond the tracepoint.
 * sendfile, sendmmsg, recvmmsg (several sock calls per syscall): enter remembers the arguments, the sock
 *         tracepoints record the sock and sum bytes, exit emits.
 * sock:inet_sock_set_state: role (connect vs accept) and end of connection.
 * ssl_trace.bpf.c, go_tls.bpf.c (appended by the loader): OpenSSL and Go crypto/tls plaintext; their
 *          connections' ciphertext is counted only.
 * filters: the agent's pids and ports are excluded; optional allow-lists of pids, process names,
 *          ports and cgroup ids are checked once per connection, when a process first uses it.
 *
 * Built with -DL7_CHUNK_SIZE, -DL7_MAX_CHUNKS, -DL7_MAX_IOV, -DL7_MAX_MMSG, -DL7_RING_BYTES (events.h).
 */
#include "events.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define L7_AF_INET 2
#define L7_AF_INET6 10
#define L7_IPPROTO_TCP 6
#define L7_MSG_PEEK 2
/* TCP states as numbered in include/net/tcp_states.h */
#define L7_TCP_SYN_SENT 2
#define L7_TCP_SYN_RECV 3
#define L7_TCP_CLOSE 7
#define L7_TCP_LISTEN 10

/* How the syscall passed its buffer. */
enum l7_buf_kind {
	L7_BUF_PLAIN = 0, /* (buf, len) */
	L7_BUF_IOV = 1, /* struct iovec *, count */
	L7_BUF_MSG = 2, /* struct user_msghdr * */
	L7_BUF_NONE = 3, /* sendfile: the kernel moves the bytes, nothing to copy */
	L7_BUF_MMSG = 4, /* struct mmsghdr *, count: ret is a message count, bytes come from the sock tracepoints */
};

/* Indexes of `l7_filter_on`: which allow-lists are active (an empty list allows everything). */
enum l7_filter {
	L7_FILTER_PIDS = 0,
	L7_FILTER_COMMS = 1,
	L7_FILTER_PORTS = 2,
	L7_FILTER_CGROUPS = 3,
	L7_FILTER_READY = 4, /* set once user space wrote the lists: until then no connection is bound */
	L7_FILTER_MAX = 5,
};

struct l7_call {
	__u64 buf; /* user pointer: buffer, iovec array, msghdr or mmsghdr array */
	__u64 sk; /* set by the sock tracepoint: nonzero only for TCP socket calls */
	__u64 bytes; /* summed by the sock tracepoints: the byte count of a sendmmsg/recvmmsg */
	__s32 fd;
	__u32 vlen;
	__u8 buf_kind;
	__u8 io;
	__u8 source;
	__u8 pad;
};

struct l7_conn {
	__u64 generation;
	__u64 send_bytes; /* bytes moved so far: the next byte position per direction */
	__u64 recv_bytes;
	__u32 pid; /* owner: the first process seen using it; 0 until a data call binds it */
	__s32 fd;
	__u8 role;
	__u8 bound;
	__u8 excluded;
	__u8 tls; /* OpenSSL plaintext seen: syscall payloads are counted, not emitted */
	__u16 family;
	__u16 local_port;
	__u16 remote_port;
	__u16 pad2;
	__u8 local_addr[L7_ADDR_LEN];
	__u8 remote_addr[L7_ADDR_LEN];
	__u64 tls_send_bytes; /* plaintext byte positions of a TLS connection */
	__u64 tls_recv_bytes;
};

struct l7_fd_key {
	__u32 tgid;
	__s32 fd;
};

/* Where the chunk walk over a call's buffers stands. */
struct l7_walk {
	__u64 pos;
	__u64 remaining;
	__u64 vec;
	__u64 nvec;
	__u64 seg_base;
	__u64 seg_len;
	__u64 seg_off;
	__u64 msg_left; /* bytes of the current message not walked yet */
	__u64 mvec; /* sendmmsg/recvmmsg: the mmsghdr array, 0 otherwise */
	__u64 nmsg;
	__u32 msg;
	__u32 seg;
	__u32 chunk;
	__u32 pad;
	__u64 budget; /* bytes the call may still copy (L7_CHUNK_SIZE only, under pressure) */
};

struct l7_comm_key {
	char comm[L7_COMM_LEN];
};

/* Per-CPU staging area: header + payload, output with one variable-size ring write. */
struct l7_scratch {
	__u64 full_ts; /* ktime of this CPU's last failed ring write */
	__u64 full_streak; /* failed ring writes in a row, each within L7_SHED_NS of the one before */
	struct l7_walk walk;
	struct l7_event hdr;
	__u8 data[L7_CHUNK_SIZE];
};

BPF_RINGBUF_OUTPUT(l7_events, L7_RING_BYTES / 4096);
/* After L7_SHED_AFTER ring writes in a row failed on a CPU (the ring is full: the agent is paused over
 * its CPU budget, or behind), its DATA calls are shed uncopied for L7_SHED_NS, then one write probes. */
#define L7_SHED_AFTER 4
#define L7_SHED_NS 1000000
/* LRU: entries whose end we never see (a thread killed mid-call, a missed close) age out. */
BPF_TABLE("lru_hash", __u64, struct l7_call, l7_calls, 16384);
BPF_TABLE("lru_hash", __u64, struct l7_conn, l7_conns, 131072);
BPF_TABLE("lru_hash", struct l7_fd_key, __u64, l7_fd_socks, 131072);
BPF_HASH(l7_excluded_pids, __u32, __u8, 1024);
BPF_HASH(l7_excluded_ports, __u16, __u8, 1024);
BPF_PERCPU_ARRAY(l7_scratch_buf, struct l7_scratch, 1);
BPF_PERCPU_ARRAY(l7_stats, __u64, L7_STAT_MAX);
BPF_ARRAY(l7_filter_on, __u8, L7_FILTER_MAX);
/* Ring fill past which calls are copied only in part (see l7_emit_data): a quarter and a half of the
 * ring, or for rings over 16 MiB 12 and 8 MiB short of full (a large ring is there to absorb a slow
 * drain whole; a burst needs only so much headroom). */
#define L7_MAX_U64(a, b) ((a) > (b) ? (a) : (b))
#define L7_PRESSURE L7_MAX_U64((__u64)L7_RING_BYTES / 4, (__u64)L7_RING_BYTES - (12ULL << 20))
#define L7_PRESSURE_HIGH L7_MAX_U64((__u64)L7_RING_BYTES / 2, (__u64)L7_RING_BYTES - (8ULL << 20))
/* How full the ring is, without a helper bcc lacks (ringbuf_query): [0] the ring bytes written (added
 * here after every record), [1] the ring bytes the agent has consumed (stored there after each drain).
 * Both only grow and each has one writer, so no write between a drain and its update goes uncounted. */
BPF_ARRAY(l7_ring_fill, __u64, 2);

/* A record of `size` bytes went into the ring: count what it takes there (8-byte header, 8-aligned). */
static __always_inline void l7_ring_wrote(__u64 size)
{
	__u32 zero = 0;
	__u64 *written = l7_ring_fill.lookup(&zero);
	if (written)
		__sync_fetch_and_add(written, (size + 8 + 7) & ~7ULL);
}

static __always_inline __u64 l7_ring_used(void)
{
	__u32 zero = 0, one = 1;
	__u64 *written = l7_ring_fill.lookup(&zero), *consumed = l7_ring_fill.lookup(&one);
	if (!written || !consumed)
		return 0;
	__u64 w = *written, c = *consumed;
	return w > c ? w - c : 0; /* c > w only while a committed record is not counted yet */
}

/* Room for a record of `size` bytes, with a margin for the other CPUs' writes in flight. */
static __always_inline int l7_ring_room(__u64 size)
{
	return l7_ring_used() + size + L7_CHUNK_SIZE * 2 < (__u64)L7_RING_BYTES;
}

/* An SSL call in flight on a thread (ssl_trace.bpf.c): the syscalls it makes name its socket. */
struct l7_tls_call {
	__u64 ssl; /* SSL * */
	__u64 buf; /* plaintext buffer */
	__u64 lenp; /* SSL_read_ex/SSL_write_ex: size_t * that receives the byte count */
	__u64 sk; /* socket of a syscall made inside this call */
	__u32 depth; /* nested SSL calls on the thread: only the outermost one is reported */
	__u8 io; /* enum l7_io, or L7_TLS_HANDSHAKE */
	__u8 ex;
	__u16 pad;
};
BPF_TABLE("lru_hash", __u64, struct l7_tls_call, l7_tls_calls, 16384);
/* SSL * -> struct sock *: SSL_read served from OpenSSL's buffer makes no syscall. */
BPF_TABLE("lru_hash", __u64, __u64, l7_ssl_socks, 65536);
/* (tgid, fd) of Go crypto/tls connections whose handshake began before any syscall bound them
 * (go_tls.bpf.c): the connection is TLS from its first byte. Consumed when it binds. */
BPF_TABLE("lru_hash", struct l7_fd_key, __u8, l7_go_tls_fds, 16384);
BPF_HASH(l7_only_pids, __u32, __u8, 1024);
BPF_HASH(l7_only_comms, struct l7_comm_key, __u8, 256);
BPF_HASH(l7_only_ports, __u16, __u8, 1024);
BPF_HASH(l7_only_cgroups, __u64, __u8, 1024);

static __always_inline void l7_count(__u32 idx, __u64 n)
{
	__u64 *v = l7_stats.lookup(&idx);
	if (v)
		*v += n; /* per-CPU slot, programs on one CPU do not nest */
}

/* The kernel sometimes refuses a ring write with room to spare (measured on 6.18 with two CPUs
 * writing: about 1 event in 40k, the retry right after failing too in most cases): such a write is
 * tried again a few times, and if it still fails it is counted apart from a full ring. */
#define L7_WRITE_RETRIES 3

/* Write one record; 0, or the counter its loss went to (L7_STAT_LOST_EVENTS: the ring was full, or
 * L7_STAT_REFUSED_EVENTS). */
static __always_inline int l7_write(void *record, __u64 size)
{
	int err = l7_events.ringbuf_output(record, size, BPF_RB_NO_WAKEUP);
#pragma unroll
	for (int i = 0; i < L7_WRITE_RETRIES; i++) {
		if (err && l7_ring_room(size))
			err = l7_events.ringbuf_output(record, size, BPF_RB_NO_WAKEUP);
	}
	if (err == 0) {
		l7_count(L7_STAT_EVENTS, 1);
		l7_ring_wrote(size);
		return 0;
	}
	int lost = l7_ring_room(size) ? L7_STAT_REFUSED_EVENTS : L7_STAT_LOST_EVENTS;
	l7_count(lost, 1);
	return lost;
}

static __always_inline int l7_enter(__s32 fd, __u64 buf, __u32 vlen, __u8 buf_kind, __u8 io, __u8 source)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (l7_excluded_pids.lookup(&tgid))
		return 0;
	struct l7_call call = {};
	call.buf = buf;
	call.fd = fd;
	call.vlen = vlen;
	call.buf_kind = buf_kind;
	call.io = io;
	call.source = source;
	l7_calls.update(&id, &call);
	return 0;
}

/* The syscall this thread is in, from its saved user registers (syscall number and first arguments). */
struct l7_sys {
	__u64 nr;
	__u64 arg0;
	__u64 arg1;
	__u64 arg2;
};

#if defined(bpf_target_x86) /* set by bcc's helpers.h from the build arch */
#define L7_NR_READ 0
#define L7_NR_WRITE 1
#define L7_NR_READV 19
#define L7_NR_WRITEV 20
#define L7_NR_SENDTO 44
#define L7_NR_RECVFROM 45
#define L7_NR_SENDMSG 46
#define L7_NR_RECVMSG 47
static __always_inline void l7_read_sys(struct l7_sys *sys, struct pt_regs *regs)
{
	/* dx, si, di, orig_ax are adjacent in x86_64's pt_regs: one read instead of four. */
	__u64 r[4] = {};
	bpf_probe_read_kernel(r, sizeof(r), &regs->dx);
	sys->arg2 = r[0];
	sys->arg1 = r[1];
	sys->arg0 = r[2];
	sys->nr = r[3];
}
_Static_assert(__builtin_offsetof(struct pt_regs, orig_ax) == __builtin_offsetof(struct pt_regs, dx) + 24,
	       "x86_64 pt_regs: dx, si, di, orig_ax adjacent");
#elif defined(bpf_target_arm64)
#define L7_NR_READ 63
#define L7_NR_WRITE 64
#define L7_NR_READV 65
#define L7_NR_WRITEV 66
#define L7_NR_SENDTO 206
#define L7_NR_RECVFROM 207
#define L7_NR_SENDMSG 211
#define L7_NR_RECVMSG 212
static __always_inline void l7_read_sys(struct l7_sys *sys, struct pt_regs *regs)
{
	__s32 nr = -1;
	bpf_probe_read_kernel(&nr, sizeof(nr), &regs->syscallno);
	sys->nr = (__u64)nr;
	bpf_probe_read_kernel(&sys->arg0, sizeof(sys->arg0), &regs->orig_x0);
	bpf_probe_read_kernel(&sys->arg1, sizeof(sys->arg1), &regs->regs[1]);
	bpf_probe_read_kernel(&sys->arg2, sizeof(sys->arg2), &regs->regs[2]);
}
#else
#error "l7scope capture: syscall numbers are defined for x86_64 and arm64 only"
#endif

/* How a hot socket syscall passes its buffer; L7_BUF_NONE for every other syscall (and no syscall). */
static __always_inline __u8 l7_hot_buf(__u64 nr)
{
	switch (nr) {
	case L7_NR_READ:
	case L7_NR_WRITE:
	case L7_NR_RECVFROM:
	case L7_NR_SENDTO:
		return L7_BUF_PLAIN;
	case L7_NR_READV:
	case L7_NR_WRITEV:
		return L7_BUF_IOV;
	case L7_NR_RECVMSG:
	case L7_NR_SENDMSG:
		return L7_BUF_MSG;
	}
	return L7_BUF_NONE;
}

static __always_inline void l7_on_io(void *ctx, struct l7_call *call, __u64 sk, long len);

/* Inside a socket call on a TCP socket. read, write, readv, writev, sendto, recvfrom, sendmsg and
 * recvmsg (one sock call per syscall) are captured right here, their arguments taken from the saved
 * user registers: no per-syscall enter/exit programs, so untraced I/O and failed calls cost almost
 * nothing. sendfile and sendmmsg/recvmmsg (several sock calls per syscall) only record the sock and
 * sum bytes for their exit program. */
static __always_inline int l7_on_sock(void *ctx, __u64 sk, __u16 family, __u16 protocol, __s32 flags, __s32 ret,
				      __u8 io)
{
	if (protocol != L7_IPPROTO_TCP || (family != L7_AF_INET && family != L7_AF_INET6))
		return 0;
	if (io == L7_IO_RECV && (flags & L7_MSG_PEEK))
		return 0; /* peeked bytes will be read again */
	__u64 id = bpf_get_current_pid_tgid();
	if (ret <= 0 && !l7_tls_calls.lookup(&id))
		return 0; /* EAGAIN and errors: nothing to copy, no SSL call to name the socket for */
	struct l7_sys sys = {};
	l7_read_sys(&sys, (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf()));
	__u8 buf_kind = l7_hot_buf(sys.nr);
	if (buf_kind != L7_BUF_NONE) {
		struct l7_call hot = {.buf = sys.arg1, .fd = (__s32)sys.arg0, .vlen = (__u32)sys.arg2,
				      .buf_kind = buf_kind, .io = io, .source = L7_SOURCE_SYSCALL};
		l7_on_io(ctx, &hot, sk, ret);
		return 0;
	}
	struct l7_call *call = l7_calls.lookup(&id);
	if (call && call->io == io) {
		call->sk = sk;
		if (ret > 0)
			call->bytes += ret; /* once per message of a sendmmsg/recvmmsg */
	}
	return 0;
}

TRACEPOINT_PROBE(sock, sock_send_length)
{
	return l7_on_sock(args, (__u64)args->sk, args->family, args->protocol, args->flags, args->ret, L7_IO_SEND);
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
	return l7_on_sock(args, (__u64)args->sk, args->family, args->protocol, args->flags, args->ret, L7_IO_RECV);
}

/* Read family, ports and addresses from the sock (offsets come from this kernel's BTF). */
static __always_inline void l7_read_tuple(struct l7_conn *c, __u64 skp)
{
	struct sock_common *skc = &((struct sock *)skp)->__sk_common;
	__u16 family = 0, dport = 0, num = 0;
	bpf_probe_read_kernel(&family, sizeof(family), &skc->skc_family);
	bpf_probe_read_kernel(&num, sizeof(num), &skc->skc_num);
	bpf_probe_read_kernel(&dport, sizeof(dport), &skc->skc_dport);
	c->family = family;
	c->local_port = num;
	c->remote_port = __builtin_bswap16(dport);
	if (family == L7_AF_INET6) {
		bpf_probe_read_kernel(c->local_addr, L7_ADDR_LEN, &skc->skc_v6_rcv_saddr);
		bpf_probe_read_kernel(c->remote_addr, L7_ADDR_LEN, &skc->skc_v6_daddr);
	} else {
		bpf_probe_read_kernel(c->local_addr, 4, &skc->skc_rcv_saddr);
		bpf_probe_read_kernel(c->remote_addr, 4, &skc->skc_daddr);
	}
}

static __always_inline void l7_fill_header(struct l7_event *e, struct l7_conn *c, __u8 kind)
{
	e->ts_ns = bpf_ktime_get_ns();
	e->generation = c->generation;
	e->pid = c->pid;
	e->tid = (__u32)bpf_get_current_pid_tgid();
	e->fd = c->fd;
	e->kind = kind;
	e->role = c->role;
	e->family = c->family;
	e->local_port = c->local_port;
	e->remote_port = c->remote_port;
	__builtin_memcpy(e->local_addr, c->local_addr, L7_ADDR_LEN);
	__builtin_memcpy(e->remote_addr, c->remote_addr, L7_ADDR_LEN);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/* OPEN and CLOSE carry no payload: built on the stack so they never touch the data scratch. */
static __always_inline void l7_emit_lifecycle(void *ctx, struct l7_conn *c, __u8 kind)
{
	struct l7_event e = {};
	l7_fill_header(&e, c, kind);
	if (kind == L7_KIND_CLOSE) {
		e.position = c->tls ? c->tls_send_bytes : c->send_bytes;
		e.length = c->tls ? c->tls_recv_bytes : c->recv_bytes;
	}
	l7_write(&e, sizeof(e));
}

/* From now on the connection's payload is OpenSSL plaintext. If ciphertext already went out as
 * syscall payload (the uprobes came after the handshake), the plaintext starts a new connection id:
 * CLOSE the old one, OPEN a new generation, so no stream mixes the two byte spaces. */
static __always_inline void l7_mark_tls(void *ctx, struct l7_conn *c)
{
	if (c->tls)
		return;
	c->tls = 1;
	if (c->send_bytes == 0 && c->recv_bytes == 0)
		return;
	if (!c->excluded) {
		c->tls = 0; /* the CLOSE carries the syscall byte counts */
		l7_emit_lifecycle(ctx, c, L7_KIND_CLOSE);
		c->tls = 1;
	}
	c->generation = bpf_ktime_get_ns();
	if (!c->excluded)
		l7_emit_lifecycle(ctx, c, L7_KIND_OPEN);
}

static __always_inline void l7_output(struct l7_scratch *s, __u64 pos, __u64 copied, __u64 length,
				      __u16 chunk)
{
	s->hdr.position = pos;
	s->hdr.length = length;
	s->hdr.data_len = copied;
	s->hdr.chunk = chunk;
	__u64 size = sizeof(struct l7_event) + (copied > L7_CHUNK_SIZE ? L7_CHUNK_SIZE : copied);
	int lost = l7_write(&s->hdr, size);
	if (lost == 0) {
		s->full_streak = 0;
	} else if (lost == L7_STAT_REFUSED_EVENTS) {
		l7_count(L7_STAT_REFUSED_BYTES, length); /* not a full ring: no shedding */
	} else {
		l7_count(L7_STAT_LOST_BYTES, length);
		__u64 now = bpf_ktime_get_ns();
		/* The probe after a shed window continues the streak: a ring that stays full keeps shedding. */
		s->full_streak = now - s->full_ts < 2 * L7_SHED_NS ? s->full_streak + 1 : 1;
		s->full_ts = now;
	}
}

/* Copy up to L7_MAX_CHUNKS chunks of the call's bytes, one iovec segment (and, for sendmmsg/recvmmsg,
 * one message) at a time. The walk's state lives in map memory, not registers: the verifier then sees
 * every path through one step converge to the same state, and its work stays linear in the step
 * count. */
static __always_inline void l7_emit_data(struct l7_call *call, struct l7_conn *c, __u64 ret, __u64 pos)
{
	__u32 zero = 0;
	struct l7_scratch *s = l7_scratch_buf.lookup(&zero);
	if (!s)
		return;
	/* The ring is full: shed the call before any copy, so overload costs the traced process little.
	 * Counted like a failed write. */
	if (s->full_streak >= L7_SHED_AFTER && bpf_ktime_get_ns() - s->full_ts < L7_SHED_NS) {
		l7_count(L7_STAT_LOST_EVENTS, 1);
		l7_count(L7_STAT_LOST_BYTES, ret);
		return;
	}
	l7_fill_header(&s->hdr, c, L7_KIND_DATA);
	s->hdr.io = call->io;
	s->hdr.source = call->source;
	s->hdr.total = ret;
	if (call->buf_kind == L7_BUF_NONE) {
		l7_output(s, pos, 0, ret, 0);
		return;
	}

	struct l7_walk *w = &s->walk;
	/* Under pressure (the ring filling: a burst such as a large body on loopback, or the agent paused
	 * over its CPU budget) copy only the first L7_CHUNK_SIZE bytes of each call, and closer to full a
	 * sixteenth of that (a request or status line and the first headers); the rest is
	 * counted, not copied. Messages and their headers start calls and stay whole; bulk body bytes go
	 * uncopied (parsers pass bodies by length) instead of whole calls, the small messages right after
	 * a burst among them, being shed once the ring is full. */
	__u64 fill = l7_ring_used();
	__u64 cap = (__u64)L7_CHUNK_SIZE * L7_MAX_CHUNKS;
	if (fill > L7_PRESSURE_HIGH)
		cap = L7_CHUNK_SIZE / 16;
	else if (fill > L7_PRESSURE)
		cap = L7_CHUNK_SIZE;
	w->budget = cap;
	w->pos = pos;
	w->remaining = ret;
	w->seg = 0;
	w->seg_off = 0;
	w->chunk = 0;
	w->vec = 0;
	w->nvec = 1;
	w->seg_base = call->buf;
	w->seg_len = ret;
	w->msg_left = ret;
	w->mvec = 0;
	w->nmsg = 0;
	w->msg = 0;
	if (call->buf_kind == L7_BUF_MMSG) {
		/* Messages are loaded by the walk itself; seg_len 0 forces the first load. */
		w->mvec = call->buf;
		w->nmsg = call->vlen;
		w->msg_left = 0;
		w->seg_len = 0;
	} else if (call->buf_kind == L7_BUF_IOV || call->buf_kind == L7_BUF_MSG) {
		w->vec = call->buf;
		w->nvec = call->vlen;
		if (call->buf_kind == L7_BUF_MSG) {
			struct user_msghdr msg = {};
			bpf_probe_read_user(&msg, sizeof(msg), (void *)call->buf);
			w->vec = (__u64)msg.msg_iov;
			w->nvec = msg.msg_iovlen;
		}
		struct iovec iov = {};
		if (w->nvec > 0)
			bpf_probe_read_user(&iov, sizeof(iov), (void *)w->vec);
		w->seg_base = (__u64)iov.iov_base;
		w->seg_len = iov.iov_len;
	}

	/* Each step loads the next message, loads the next iovec, or emits one chunk. */
	for (int step = 0; step < 2 * L7_MAX_MMSG + L7_MAX_IOV + L7_MAX_CHUNKS; step++) {
		if (w->remaining == 0 || w->chunk >= L7_MAX_CHUNKS || w->budget == 0)
			break;
		if (w->mvec && w->msg_left == 0) {
			if (w->msg >= w->nmsg || w->msg >= L7_MAX_MMSG)
				break;
			struct mmsghdr mm = {};
			bpf_probe_read_user(&mm, sizeof(mm), (void *)(w->mvec + w->msg * sizeof(struct mmsghdr)));
			w->msg++;
			w->vec = (__u64)mm.msg_hdr.msg_iov;
			w->nvec = mm.msg_hdr.msg_iovlen;
			w->msg_left = mm.msg_len;
			w->seg = 0;
			w->seg_off = 0;
			struct iovec iov = {};
			if (w->nvec > 0)
				bpf_probe_read_user(&iov, sizeof(iov), (void *)w->vec);
			w->seg_base = (__u64)iov.iov_base;
			w->seg_len = iov.iov_len;
			continue;
		}
		if (w->seg_off >= w->seg_len) {
			w->seg++;
			if (w->seg >= w->nvec || w->seg >= L7_MAX_IOV)
				break;
			struct iovec iov = {};
			bpf_probe_read_user(&iov, sizeof(iov), (void *)(w->vec + w->seg * sizeof(struct iovec)));
			w->seg_base = (__u64)iov.iov_base;
			w->seg_len = iov.iov_len;
			w->seg_off = 0;
			continue;
		}
		__u64 n = w->seg_len - w->seg_off;
		if (n > w->msg_left)
			n = w->msg_left;
		if (n > w->remaining)
			n = w->remaining;
		if (n > w->budget)
			n = w->budget;
		if (n > L7_CHUNK_SIZE)
			n = L7_CHUNK_SIZE;
		bpf_probe_read_user(s->data, n, (void *)(w->seg_base + w->seg_off));
		w->seg_off += n;
		w->msg_left -= n;
		/* The syscall's last chunk accounts for every byte left, copied or not. */
		w->budget -= n;
		__u64 length = w->chunk + 1 >= L7_MAX_CHUNKS || w->budget == 0 ? w->remaining : n;
		l7_output(s, w->pos, n, length, w->chunk);
		w->pos += length;
		w->remaining -= length;
		w->chunk++;
	}
	if (w->remaining > 0) {
		/* iovecs past L7_MAX_IOV, messages past L7_MAX_MMSG: a copy-less event keeps positions whole. */
		l7_output(s, w->pos, 0, w->remaining, w->chunk);
	}
	if (cap - w->budget < ret) /* copied less than the call moved */
		l7_count(L7_STAT_TRUNCATED, 1);
}

/* Allow-lists, checked once when a process first uses a connection (empty lists allow everything). */
static __always_inline int l7_allowed(struct l7_conn *c)
{
	__u32 idx = L7_FILTER_PIDS;
	__u8 *on = l7_filter_on.lookup(&idx);
	if (on && *on && !l7_only_pids.lookup(&c->pid))
		return 0;
	idx = L7_FILTER_PORTS;
	on = l7_filter_on.lookup(&idx);
	if (on && *on && !l7_only_ports.lookup(&c->local_port) && !l7_only_ports.lookup(&c->remote_port))
		return 0;
	idx = L7_FILTER_CGROUPS;
	on = l7_filter_on.lookup(&idx);
	if (on && *on) {
		__u64 cg = bpf_get_current_cgroup_id();
		if (!l7_only_cgroups.lookup(&cg))
			return 0;
	}
	idx = L7_FILTER_COMMS;
	on = l7_filter_on.lookup(&idx);
	if (on && *on) {
		/* The process's name is its group leader's comm: thread names differ (java, nginx workers). */
		struct l7_comm_key key = {};
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		struct task_struct *leader = 0;
		bpf_probe_read_kernel(&leader, sizeof(leader), &task->group_leader);
		bpf_probe_read_kernel(key.comm, sizeof(key.comm), &leader->comm);
		if (!l7_only_comms.lookup(&key))
			return 0;
	}
	return 1;
}

/* A socket call on sk moved len bytes (len <= 0: it failed). Names the socket of an SSL call in
 * flight, binds the connection to its first process, and emits the payload. */
static __always_inline void l7_on_io(void *ctx, struct l7_call *call, __u64 sk, long len)
{
	__u64 id = bpf_get_current_pid_tgid();
	/* Inside an SSL call: this socket carries that SSL object's ciphertext. */
	struct l7_tls_call *tls = l7_tls_calls.lookup(&id);
	if (tls) {
		tls->sk = sk;
		l7_ssl_socks.update(&tls->ssl, &sk);
	}
	if (len <= 0)
		return;
	struct l7_conn *c = l7_conns.lookup(&sk);
	if (!c) {
		/* Opened before we were loaded (or its handshake was missed): role unknown. */
		struct l7_conn fresh = {};
		fresh.generation = bpf_ktime_get_ns();
		l7_conns.update(&sk, &fresh);
		c = l7_conns.lookup(&sk);
		if (!c)
			return;
	}
	if (!c->bound) {
		/* Programs attach before the agent writes its exclusions and allow-lists: bind nothing yet. */
		__u32 ready = L7_FILTER_READY;
		__u8 *on = l7_filter_on.lookup(&ready);
		if (!on || !*on)
			return;
		c->bound = 1;
		c->pid = id >> 32;
		c->fd = call->fd;
		l7_read_tuple(c, sk);
		/* Excluded pids (the agent itself) are checked here, once per connection, not per call. */
		if (l7_excluded_pids.lookup(&c->pid) || l7_excluded_ports.lookup(&c->local_port) ||
		    l7_excluded_ports.lookup(&c->remote_port) || !l7_allowed(c))
			c->excluded = 1;
		struct l7_fd_key key = {.tgid = c->pid, .fd = c->fd};
		l7_fd_socks.update(&key, &sk);
		if (l7_go_tls_fds.lookup(&key)) { /* a Go TLS handshake started on it: no ciphertext as payload */
			c->tls = 1;
			l7_go_tls_fds.delete(&key);
		}
		if (!c->excluded)
			l7_emit_lifecycle(ctx, c, L7_KIND_OPEN);
	}
	if (c->excluded)
		return;
	if (tls)
		l7_mark_tls(ctx, c);
	if (c->tls) {
		/* Ciphertext: its plaintext comes from the SSL uprobes. Sizes only, for the stats. */
		if (call->io == L7_IO_SEND)
			__sync_fetch_and_add(&c->send_bytes, len);
		else
			__sync_fetch_and_add(&c->recv_bytes, len);
		l7_count(L7_STAT_TLS_CIPHER_BYTES, len);
		return;
	}
	__u64 pos = call->io == L7_IO_SEND ? __sync_fetch_and_add(&c->send_bytes, len)
					   : __sync_fetch_and_add(&c->recv_bytes, len);
	l7_emit_data(call, c, len, pos);
}

/* sendfile, sendmmsg, recvmmsg: at exit, with the sock and byte count their sock calls recorded. */
static __always_inline int l7_exit(void *ctx, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct l7_call *call = l7_calls.lookup(&id);
	if (!call)
		return 0;
	if (call->sk)
		l7_on_io(ctx, call, call->sk, call->buf_kind == L7_BUF_MMSG ? (ret > 0 ? (long)call->bytes : 0) : ret);
	l7_calls.delete(&id);
	return 0;
}

/* Emit CLOSE for a bound connection and forget it. */
static __always_inline void l7_end(void *ctx, __u64 sk, struct l7_conn *c)
{
	if (c->bound) {
		if (!c->excluded)
			l7_emit_lifecycle(ctx, c, L7_KIND_CLOSE);
		struct l7_fd_key key = {.tgid = c->pid, .fd = c->fd};
		__u64 *owner = l7_fd_socks.lookup(&key);
		if (owner && *owner == sk)
			l7_fd_socks.delete(&key);
	}
	l7_conns.delete(&sk);
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	if (args->protocol != L7_IPPROTO_TCP)
		return 0;
	__u64 sk = (__u64)args->skaddr;
	int oldstate = args->oldstate, newstate = args->newstate;
	if (newstate == L7_TCP_CLOSE) {
		struct l7_conn *c = l7_conns.lookup(&sk);
		if (c)
			l7_end(args, sk, c);
		return 0;
	}
	__u8 role;
	if (oldstate == L7_TCP_CLOSE && newstate == L7_TCP_SYN_SENT)
		role = L7_ROLE_CLIENT;
	else if (oldstate == L7_TCP_LISTEN && newstate == L7_TCP_SYN_RECV)
		role = L7_ROLE_SERVER;
	else
		return 0;
	struct l7_conn c = {};
	c.generation = bpf_ktime_get_ns();
	c.role = role;
	/* A first guess: the client's source port is not chosen yet at SYN_SENT; re-read when bound. */
	c.family = args->family;
	c.local_port = args->sport;
	c.remote_port = args->dport;
	if (args->family == L7_AF_INET6) {
		__builtin_memcpy(c.local_addr, args->saddr_v6, L7_ADDR_LEN);
		__builtin_memcpy(c.remote_addr, args->daddr_v6, L7_ADDR_LEN);
	} else {
		__builtin_memcpy(c.local_addr, args->saddr, 4);
		__builtin_memcpy(c.remote_addr, args->daddr, 4);
	}
	l7_conns.update(&sk, &c);
	return 0;
}

/* close(fd) of a bound socket ends the connection for its owner now, not after FIN/TIME_WAIT. */
TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	struct l7_fd_key key = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__s32)args->fd};
	l7_go_tls_fds.delete(&key); /* a Go TLS mark never consumed (not a TCP socket) must not outlive its fd */
	__u64 *skp = l7_fd_socks.lookup(&key);
	if (!skp)
		return 0;
	__u64 sk = *skp;
	struct l7_conn *c = l7_conns.lookup(&sk);
	if (c && c->pid == key.tgid && c->fd == key.fd)
		l7_end(args, sk, c);
	else
		l7_fd_socks.delete(&key);
	return 0;
}

/* sendfile moves file bytes in the kernel: sizes only, so byte positions stay right. */
TRACEPOINT_PROBE(syscalls, sys_enter_sendfile64)
{
	return l7_enter(args->out_fd, 0, 0, L7_BUF_NONE, L7_IO_SEND, L7_SOURCE_SENDFILE);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendfile64) { return l7_exit(args, args->ret); }

/* sendmmsg/recvmmsg return a message count; their byte count is summed by the sock tracepoints. */
TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
	return l7_enter(args->fd, (__u64)args->mmsg, args->vlen, L7_BUF_MMSG, L7_IO_SEND, L7_SOURCE_SYSCALL);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) { return l7_exit(args, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg)
{
	return l7_enter(args->fd, (__u64)args->mmsg, args->vlen, L7_BUF_MMSG, L7_IO_RECV, L7_SOURCE_SYSCALL);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg) { return l7_exit(args, args->ret); }

/* A new program image: user space checks its maps for TLS libraries not probed yet. */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
	struct l7_event e = {};
	e.ts_ns = bpf_ktime_get_ns();
	e.kind = L7_KIND_EXEC;
	e.pid = args->pid;
	e.tid = args->pid;
	e.fd = -1;
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	l7_write(&e, sizeof(e));
	return 0;
}

/* probes/capture.py appends ssl_trace.bpf.c here: bcc makes programs only of the main file's functions. */
