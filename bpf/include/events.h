/* l7scope: the only C ABI between the kernel programs and user space.
 *
 * Every record in the ring buffer is one `struct l7_event` header, followed by `data_len` payload
 * bytes for DATA events. probes/capture.py mirrors this header with `struct` (a test checks it
 * against this file). Names carry an l7_/L7_ prefix so they never clash with vmlinux.h.
 */
#ifndef L7SCOPE_EVENTS_H
#define L7SCOPE_EVENTS_H

/* Payload bytes copied per event (a power of two: the copy offset is masked with it). */
#ifndef L7_CHUNK_SIZE
#define L7_CHUNK_SIZE 4096
#endif

/* Events (chunks) one syscall may emit; bytes past L7_CHUNK_SIZE * L7_MAX_CHUNKS are not copied. A
 * chunk never spans two iovec entries, so gRPC's many small iovecs (frame header, payload, ...) need
 * far more chunks than bytes would: 8 left gRPC writes half copied, 32 covers them. */
#ifndef L7_MAX_CHUNKS
#define L7_MAX_CHUNKS 32
#endif

/* iovec entries read for writev/readv/sendmsg/recvmsg (per message for sendmmsg/recvmmsg); bytes in
 * later entries are not copied, but still counted by a copy-less event. */
#ifndef L7_MAX_IOV
#define L7_MAX_IOV 32
#endif

/* Messages walked per sendmmsg/recvmmsg; later messages' bytes are counted, not copied. The per-syscall
 * copy bound (L7_CHUNK_SIZE * L7_MAX_CHUNKS) covers all of a call's messages together. */
#ifndef L7_MAX_MMSG
#define L7_MAX_MMSG 8
#endif

/* TLS: plaintext of SSL_read/SSL_write(_ex) has the same per-call bounds as a plain syscall buffer
 * (L7_CHUNK_SIZE * L7_MAX_CHUNKS copied, the rest counted). sendfile: sizes only, never copied. */

/* Ring buffer size in bytes (a power of two, a multiple of the page size). */
#ifndef L7_RING_BYTES
#define L7_RING_BYTES (16 << 20)
#endif

#define L7_COMM_LEN 16
#define L7_ADDR_LEN 16

/* Which way bytes moved for the traced process (probes/fragment.py Io). */
enum l7_io {
	L7_IO_SEND = 0,
	L7_IO_RECV = 1,
};

/* The traced process's side of the connection (protocols/base.py Role). */
enum l7_role {
	L7_ROLE_UNKNOWN = 0,
	L7_ROLE_CLIENT = 1,
	L7_ROLE_SERVER = 2,
};

/* Where the payload came from (probes/fragment.py Source). */
enum l7_source {
	L7_SOURCE_SYSCALL = 0,
	L7_SOURCE_TLS = 1,
	L7_SOURCE_SENDFILE = 2,
};

enum l7_kind {
	L7_KIND_DATA = 0,
	L7_KIND_OPEN = 1, /* first time a process used the connection: labels and 5-tuple */
	L7_KIND_CLOSE = 2, /* the connection ended: final byte counts */
	L7_KIND_EXEC = 3, /* a process exec'd (pid, comm only): user space looks for new TLS libraries */
};

/* Indexes of the per-CPU counter array `l7_stats`. */
enum l7_stat {
	L7_STAT_EVENTS = 0, /* events written to the ring */
	L7_STAT_LOST_EVENTS = 1, /* events the ring had no room for */
	L7_STAT_LOST_BYTES = 2, /* syscall bytes those lost events accounted for */
	L7_STAT_TRUNCATED = 3, /* syscalls whose payload was not copied in full */
	L7_STAT_TLS_CIPHER_BYTES = 4, /* ciphertext bytes of TLS connections: counted, not emitted */
	L7_STAT_REFUSED_EVENTS = 5, /* events whose ring write failed with room to spare, retries too */
	L7_STAT_REFUSED_BYTES = 6, /* syscall bytes those refused events accounted for */
	L7_STAT_TLS_UNMAPPED = 7, /* TLS plaintext calls whose socket is unknown (no syscall named it): dropped */
	L7_STAT_TLS_UNMAPPED_BYTES = 8, /* plaintext bytes of those calls */
	L7_STAT_MAX = 9,
};

struct l7_event {
	__u64 ts_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) at the event */
	__u64 generation; /* ktime when the connection was first seen: makes conn ids unique */
	/* DATA: byte position of this event's first byte in its direction (in plaintext bytes for
	 * source TLS). CLOSE: bytes sent (plaintext bytes for a TLS connection). */
	__u64 position;
	/* DATA: bytes this event accounts for, copied or not (data_len <= length). CLOSE: bytes received. */
	__u64 length;
	__u64 total; /* DATA: the whole syscall's byte count, over all of its chunks */
	__u32 pid; /* tgid that owns the connection (its first user) */
	__u32 tid; /* thread that made the call */
	__s32 fd; /* the owner's file descriptor for the socket */
	__u32 data_len; /* payload bytes following this header */
	__u8 kind; /* enum l7_kind */
	__u8 io; /* enum l7_io */
	__u8 role; /* enum l7_role */
	__u8 source; /* enum l7_source */
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 local_port; /* host byte order */
	__u16 remote_port; /* host byte order */
	__u16 chunk; /* DATA: index of this chunk within its syscall */
	__u8 local_addr[L7_ADDR_LEN]; /* network order; IPv4 in the first 4 bytes */
	__u8 remote_addr[L7_ADDR_LEN];
	char comm[L7_COMM_LEN]; /* task comm of the calling thread */
};

#endif /* L7SCOPE_EVENTS_H */
