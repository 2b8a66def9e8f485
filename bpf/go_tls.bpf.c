/* l7scope Go crypto/tls plaintext (bcc uprobes), appended to socket_trace.bpf.c by the loader.
 *
 * Go links crypto/tls into each executable; probes/tls.py + probes/gotls.py attach, per Go executable:
 *   entry of (*tls.Conn).Read/Write: remember (fd, buffer) under the goroutine (its g pointer), since a
 *         goroutine may move between threads while it waits for the socket;
 *   every RET of those functions (uretprobes would corrupt Go stacks): n > 0 plaintext bytes, copied
 *         with source TLS at the connection's plaintext positions, as for OpenSSL;
 *   entry of (*tls.Conn).clientHandshake/serverHandshake: the connection is TLS from now on, so its
 *         handshake ciphertext is counted and never emitted as payload.
 * Register ABI (Go >= 1.17): amd64 arguments RAX, RBX, RCX...; results RAX, RBX...; g in R14.
 * arm64: X0, X1, X2...; g in X28.
 * The fd is reached from the *tls.Conn through the offsets in l7_go_layout (probes/gotls.py LAYOUTS):
 * tls.Conn.conn (net.Conn: itab, data) -> *net.TCPConn -> fd *netFD -> pfd poll.FD -> Sysfd.
 */

#if defined(bpf_target_x86)
#define L7_GO_ARG0(ctx) ((ctx)->ax)
#define L7_GO_ARG1(ctx) ((ctx)->bx)
#define L7_GO_RET0(ctx) ((ctx)->ax)
#define L7_GO_G(ctx) ((ctx)->r14)
#elif defined(bpf_target_arm64)
#define L7_GO_ARG0(ctx) ((ctx)->regs[0])
#define L7_GO_ARG1(ctx) ((ctx)->regs[1])
#define L7_GO_RET0(ctx) ((ctx)->regs[0])
#define L7_GO_G(ctx) ((ctx)->regs[28])
#endif

struct l7_go_layout {
	__u64 conn; /* tls.Conn.conn */
	__u64 tcp_fd; /* net.TCPConn -> conn.fd */
	__u64 netfd_pfd; /* netFD.pfd */
	__u64 pfd_sysfd; /* poll.FD.Sysfd */
};
BPF_ARRAY(l7_go_layout, struct l7_go_layout, 1);

struct l7_go_key {
	__u64 g; /* the goroutine */
	__u32 tgid;
	__u32 pad;
};

struct l7_go_call {
	__u64 buf;
	__s32 fd;
	__u8 io;
	__u8 pad[3];
};
/* LRU: a call whose RET never runs (a panic through it) ages out. */
/* Sized for many idle keep-alive connections, each with a goroutine parked in Read. */
BPF_TABLE("lru_hash", struct l7_go_key, struct l7_go_call, l7_go_calls, 65536);

/* The socket fd under a *tls.Conn, or -1 (a tls.Conn over something else than a socket reads garbage
 * here: such an fd names no connection of this process, or one of its own that is then marked TLS). */
static __always_inline __s32 l7_go_fd(__u64 tls_conn)
{
	__u32 zero = 0;
	struct l7_go_layout *o = l7_go_layout.lookup(&zero);
	if (!o || !tls_conn)
		return -1;
	__u64 tcp = 0, netfd = 0;
	__s64 sysfd = -1;
	bpf_probe_read_user(&tcp, sizeof(tcp), (void *)(tls_conn + o->conn + 8)); /* the interface's data */
	if (!tcp)
		return -1;
	bpf_probe_read_user(&netfd, sizeof(netfd), (void *)(tcp + o->tcp_fd));
	if (!netfd)
		return -1;
	bpf_probe_read_user(&sysfd, sizeof(sysfd), (void *)(netfd + o->netfd_pfd + o->pfd_sysfd));
	return sysfd >= 0 && sysfd < 0x7fffffff ? (__s32)sysfd : -1;
}

/* The connection on (tgid, fd) carries TLS: mark it, or, not bound yet, have it marked when it binds. */
static __always_inline void l7_go_mark(void *ctx, __u32 tgid, __s32 fd)
{
	struct l7_fd_key key = {.tgid = tgid, .fd = fd};
	__u64 *sk = l7_fd_socks.lookup(&key);
	if (sk) {
		struct l7_conn *c = l7_conns.lookup(sk);
		if (c && c->bound && c->pid == tgid && c->fd == fd) {
			l7_mark_tls(ctx, c);
			return;
		}
	}
	__u8 one = 1;
	l7_go_tls_fds.update(&key, &one);
}

static __always_inline int l7_go_enter(struct pt_regs *ctx, __u8 io)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (l7_excluded_pids.lookup(&tgid))
		return 0;
	__s32 fd = l7_go_fd(L7_GO_ARG0(ctx));
	if (fd < 0)
		return 0;
	/* A connection whose handshake went by before the probes (opened before the agent, or before this
	 * executable was probed) is marked here, before the syscall this call makes moves ciphertext. */
	l7_go_mark(ctx, tgid, fd);
	struct l7_go_key key = {.g = L7_GO_G(ctx), .tgid = tgid};
	struct l7_go_call call = {.buf = L7_GO_ARG1(ctx), .fd = fd, .io = io};
	l7_go_calls.update(&key, &call);
	return 0;
}

int l7_go_tls_write_enter(struct pt_regs *ctx) { return l7_go_enter(ctx, L7_IO_SEND); }
int l7_go_tls_read_enter(struct pt_regs *ctx) { return l7_go_enter(ctx, L7_IO_RECV); }

int l7_go_tls_handshake_enter(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (l7_excluded_pids.lookup(&tgid))
		return 0;
	__s32 fd = l7_go_fd(L7_GO_ARG0(ctx));
	if (fd >= 0)
		l7_go_mark(ctx, tgid, fd);
	return 0;
}

/* At each RET of Read/Write: (n int, err error) with n in the first result register. */
int l7_go_tls_return(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct l7_go_key key = {.g = L7_GO_G(ctx), .tgid = tgid};
	struct l7_go_call *cur = l7_go_calls.lookup(&key);
	if (!cur)
		return 0;
	struct l7_go_call call = *cur;
	l7_go_calls.delete(&key);
	__s64 n = (__s64)L7_GO_RET0(ctx);
	if (n <= 0)
		return 0;
	struct l7_fd_key fk = {.tgid = tgid, .fd = call.fd};
	__u64 *skp = l7_fd_socks.lookup(&fk);
	struct l7_conn *c = skp ? l7_conns.lookup(skp) : 0;
	if (!c || !c->bound || c->pid != tgid || c->fd != call.fd) {
		/* No syscall bound this fd to a TCP connection (nor a pending mark): dropped, counted. */
		l7_count(L7_STAT_TLS_UNMAPPED, 1);
		l7_count(L7_STAT_TLS_UNMAPPED_BYTES, (__u64)n);
		return 0;
	}
	if (c->excluded)
		return 0; /* filtered out on purpose */
	l7_mark_tls(ctx, c);
	__u64 len = (__u64)n;
	__u64 pos = call.io == L7_IO_SEND ? __sync_fetch_and_add(&c->tls_send_bytes, len)
					  : __sync_fetch_and_add(&c->tls_recv_bytes, len);
	struct l7_call plain = {};
	plain.buf = call.buf;
	plain.buf_kind = L7_BUF_PLAIN;
	plain.io = call.io;
	plain.source = L7_SOURCE_TLS;
	l7_emit_data(&plain, c, len, pos);
	return 0;
}
