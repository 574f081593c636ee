// Command churn opens and closes loopback TCP connections as fast as it can:
// the load of `make bench-trace`. Run it inside a network namespace of its
// own (ip netns exec NS churn ...) so that its transitions are the only ones
// there.
//
//	churn -conns 30000 -clients 8
//	conns=30000 clients=8 seconds=2.013 conns_per_sec=14903
//
// Each connection: connect, send 16 bytes, close; the server reads the bytes,
// sees EOF and closes. That is 10 state transitions per connection (5 a side)
// and 2 for the listener.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	conns := flag.Int("conns", 30000, "connections to open and close")
	clients := flag.Int("clients", 8, "concurrent clients")
	addr := flag.String("listen", "127.0.0.1:0", "server address (a fixed port lets a tracer's output be filtered)")
	flag.Parse()
	if err := run(*addr, *conns, *clients); err != nil {
		fmt.Fprintln(os.Stderr, "churn:", err)
		os.Exit(1)
	}
}

func run(listen string, conns, clients int) error {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // plain TCP: 10 transitions per connection
	ln, err := lc.Listen(context.Background(), "tcp4", listen)
	if err != nil {
		return err
	}
	var served sync.WaitGroup
	served.Add(conns)
	go serve(ln, &served)
	addr := ln.Addr().String()
	payload := make([]byte, 16)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(conns) {
				conn, err := net.Dial("tcp4", addr)
				if err != nil {
					errs <- err
					return
				}
				if _, err := conn.Write(payload); err != nil {
					errs <- err
					return
				}
				conn.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// Every server side closed too: all 10 transitions of every
	// connection have happened when the clock stops.
	served.Wait()
	elapsed := time.Since(start)
	ln.Close()
	fmt.Printf("conns=%d clients=%d seconds=%.3f conns_per_sec=%.0f\n", conns, clients, elapsed.Seconds(), float64(conns)/elapsed.Seconds())
	return nil
}

func serve(ln net.Listener, served *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			io.Copy(io.Discard, c) // the 16 bytes, then EOF
			c.Close()
			served.Done()
		}()
	}
}
