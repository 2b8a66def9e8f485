// A Go crypto/tls peer for l7scope's tests: an HTTPS server (HTTP/1.1 and HTTP/2 by ALPN) and a
// client making N requests over one connection, plus the struct offsets l7scope's Go TLS probes use.
//
//	peer server ADDR CERT KEY        serve /hello/<n>, /echo (POST) until killed; prints "ready" once listening
//	peer client URL N h1|h2 [wait]   N sequential GET requests over one kept-alive connection; with
//	                                 wait, each after a line on stdin, and one more line before exiting
//	peer offsets                     tls.Conn.conn, netFD.pfd, poll.FD.Sysfd offsets, via reflect
//	peer unix PATH CERT KEY MSG ADDR TLS over a Unix socket (the client sends MSG, the server echoes it),
//	                                 both ends closed, then MSG in plaintext over TCP to ADDR (fds reused)
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strconv"
)

func serve(addr, cert, key string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "hello %s over %s\n", r.URL.Path, r.Proto)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	srv := &http.Server{Handler: mux}
	fmt.Fprintln(os.Stderr, srv.ServeTLS(ln, cert, key))
	os.Exit(1)
}

func client(url string, n int, proto string, wait bool) {
	in := bufio.NewReader(os.Stdin)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: proto == "h2"}
	c := &http.Client{Transport: tr}
	for i := 0; i < n; i++ {
		if wait {
			in.ReadString('\n')
		}
		resp, err := c.Get(url + strconv.Itoa(i))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s %s", resp.StatusCode, resp.Proto, body)
	}
	if wait {
		in.ReadString('\n') // the connection stays open until told
	}
}

func offsets() {
	conn, _ := reflect.TypeOf(tls.Conn{}).FieldByName("conn")
	tcp := reflect.TypeOf(net.TCPConn{})
	inner := tcp.Field(0).Type // net.conn
	fd, _ := inner.FieldByName("fd")
	netfd := fd.Type.Elem()
	pfd, _ := netfd.FieldByName("pfd")
	sysfd, _ := pfd.Type.FieldByName("Sysfd")
	fmt.Printf("tls.Conn.conn %d\nnet.conn.fd %d\nnet.netFD.pfd %d\npoll.FD.Sysfd %d\n",
		conn.Offset, tcp.Field(0).Offset+fd.Offset, pfd.Offset, sysfd.Offset)
}

func unixEcho(path, certFile, keyFile, msg, addr string) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	served := make(chan bool)
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		buf := make([]byte, len(msg))
		io.ReadFull(s, buf)
		s.Write(buf)
		s.Close()
	}()
	raw, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	c.Write([]byte(msg))
	buf := make([]byte, len(msg))
	io.ReadFull(c, buf)
	c.Close()
	<-served
	fmt.Println(string(buf))
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	plain.Write([]byte(msg))
	io.ReadFull(plain, buf)
	plain.Close()
	ln.Close() // after the TCP dial: the listener's fd is not free for it, the TLS ones are
	fmt.Println(string(buf))
}

func main() {
	switch os.Args[1] {
	case "server":
		serve(os.Args[2], os.Args[3], os.Args[4])
	case "client":
		n, _ := strconv.Atoi(os.Args[3])
		client(os.Args[2], n, os.Args[4], len(os.Args) > 5 && os.Args[5] == "wait")
	case "offsets":
		offsets()
	case "unix":
		unixEcho(os.Args[2], os.Args[3], os.Args[4], os.Args[5], os.Args[6])
	}
}
