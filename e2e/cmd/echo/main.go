// Command echo is the lab's backend: it stands for a pod and answers every
// HTTP request, and every UDP datagram, with which endpoint and node it is
// and whom it saw, so a test can tell where its traffic landed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var addrs, tcp, udp list
	name := flag.String("name", "", "endpoint name")
	node := flag.String("node", "", "node it runs on")
	flag.Var(&addrs, "listen", "address to listen on (repeatable)")
	flag.Var(&tcp, "tcp", "TCP port to serve HTTP on (repeatable)")
	flag.Var(&udp, "udp", "UDP port to answer on (repeatable)")
	flag.Parse()
	if *name == "" || len(addrs) == 0 || len(tcp)+len(udp) == 0 {
		log.Fatal("echo: --name, --listen and a --tcp or --udp port are required")
	}
	answer := func(remote string) string {
		return fmt.Sprintf("endpoint=%s node=%s client=%s\n", *name, *node, remote)
	}

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprint(w, answer(host))
	})
	errs := make(chan error, 1)
	for _, a := range addrs {
		for _, p := range tcp {
			ln, err := net.Listen("tcp", net.JoinHostPort(a, p))
			if err != nil {
				log.Fatalf("echo: %v", err)
			}
			go func() { errs <- http.Serve(ln, handler) }()
		}
		for _, p := range udp {
			port, err := strconv.Atoi(p)
			if err != nil {
				log.Fatalf("echo: bad UDP port %q", p)
			}
			conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(a), Port: port})
			if err != nil {
				log.Fatalf("echo: %v", err)
			}
			go func() {
				buf := make([]byte, 2048)
				for {
					_, from, err := conn.ReadFromUDP(buf)
					if err != nil {
						errs <- err
						return
					}
					conn.WriteToUDP([]byte(answer(from.IP.String())), from)
				}
			}()
		}
	}
	log.Printf("echo %s on %s: listening on %v, tcp %v, udp %v", *name, *node, addrs, tcp, udp)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	select {
	case err := <-errs:
		log.Fatalf("echo: %v", err)
	case <-ctx.Done():
	}
}
