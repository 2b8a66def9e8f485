/* l7scope OpenSSL plaintext (bcc uprobes), appended to socket_trace.bpf.c by the loader.
 *
 * entry:  remember (SSL *, buffer, byte-count pointer) per thread; nested SSL calls only count depth.
 * inside: a socket syscall by the same thread names the SSL object's socket (l7_exit in
 *         socket_trace.bpf.c fills l7_tls_calls.sk and l7_ssl_socks) and marks the connection TLS.
 * return: copy the plaintext with source TLS, positioned in the connection's plaintext byte space.
 * Handshake functions are probed only so their ciphertext marks the connection TLS before any data.
 * Attached by probes/tls.py to each libssl file (OpenSSL 1.1 and 3 share these symbols).
 */

#define L7_TLS_HANDSHAKE 2

static __always_inline int l7_tls_enter(struct pt_regs *ctx, __u8 io, __u8 ex)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (l7_excluded_pids.lookup(&tgid))
		return 0;
	struct l7_tls_call *cur = l7_tls_calls.lookup(&id);
	if (cur) {
		cur->depth++;
		return 0;
	}
	struct l7_tls_call call = {};
	call.ssl = PT_REGS_PARM1(ctx);
	call.buf = PT_REGS_PARM2(ctx);
	call.lenp = ex ? PT_REGS_PARM4(ctx) : 0;
	call.io = io;
	call.ex = ex;
	l7_tls_calls.update(&id, &call);
	return 0;
}

static __always_inline int l7_tls_exit(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct l7_tls_call *cur = l7_tls_calls.lookup(&id);
	if (!cur)
		return 0;
	if (cur->depth) {
		cur->depth--;
		return 0;
	}
	struct l7_tls_call call = *cur;
	l7_tls_calls.delete(&id);
	if (call.io == L7_TLS_HANDSHAKE)
		return 0;
	int rc = (int)PT_REGS_RC(ctx);
	__u64 n = 0;
	if (call.ex) {
		if (rc != 1) /* _ex: 1 on success, the count behind the 4th argument */
			return 0;
		bpf_probe_read_user(&n, sizeof(n), (void *)call.lenp);
	} else {
		if (rc <= 0)
			return 0;
		n = (__u64)rc;
	}
	if (n == 0)
		return 0;
	__u64 sk = call.sk;
	if (sk == 0) {
		__u64 *known = l7_ssl_socks.lookup(&call.ssl);
		if (!known) { /* no syscall seen for this SSL yet: its socket is unknown */
			l7_count(L7_STAT_TLS_UNMAPPED, 1);
			l7_count(L7_STAT_TLS_UNMAPPED_BYTES, n);
			return 0;
		}
		sk = *known;
	}
	struct l7_conn *c = l7_conns.lookup(&sk);
	if (!c || !c->bound || c->excluded)
		return 0;
	l7_mark_tls(ctx, c);
	__u64 pos = call.io == L7_IO_SEND ? __sync_fetch_and_add(&c->tls_send_bytes, n)
					  : __sync_fetch_and_add(&c->tls_recv_bytes, n);
	struct l7_call plain = {};
	plain.buf = call.buf;
	plain.buf_kind = L7_BUF_PLAIN;
	plain.io = call.io;
	plain.source = L7_SOURCE_TLS;
	l7_emit_data(&plain, c, n, pos);
	return 0;
}

int l7_ssl_write_enter(struct pt_regs *ctx) { return l7_tls_enter(ctx, L7_IO_SEND, 0); }
int l7_ssl_read_enter(struct pt_regs *ctx) { return l7_tls_enter(ctx, L7_IO_RECV, 0); }
int l7_ssl_write_ex_enter(struct pt_regs *ctx) { return l7_tls_enter(ctx, L7_IO_SEND, 1); }
int l7_ssl_read_ex_enter(struct pt_regs *ctx) { return l7_tls_enter(ctx, L7_IO_RECV, 1); }
int l7_ssl_handshake_enter(struct pt_regs *ctx) { return l7_tls_enter(ctx, L7_TLS_HANDSHAKE, 0); }
int l7_ssl_return(struct pt_regs *ctx) { return l7_tls_exit(ctx); }
