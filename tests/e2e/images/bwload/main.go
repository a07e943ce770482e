// bwload: the e2e workload. `bwload serve ADDR` accepts TCP connections; a client
// sends one byte, 'S' (server sends to it) or 'R' (server receives), then the
// bulk transfer runs until the client closes. `bwload client ADDR S|R SECONDS`
// runs one transfer and prints the goodput in bits per second.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

func serve(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			cmd := make([]byte, 1)
			if _, err := io.ReadFull(c, cmd); err != nil {
				return
			}
			buf := make([]byte, 128<<10)
			if cmd[0] == 'S' {
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}
			io.Copy(io.Discard, c)
		}(c)
	}
}

func client(addr, mode string, secs float64) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	c.Write([]byte(mode))
	buf := make([]byte, 128<<10)
	if mode != "S" {
		// Sending, what is counted is what the socket took: keep its buffer
		// small so that bytes still queued in it hardly count as moved.
		c.(*net.TCPConn).SetWriteBuffer(32 << 10)
		buf = buf[:16<<10]
	}
	// Skip the first second (slow start, burst), then measure.
	warm := time.Now().Add(time.Second)
	end := warm.Add(time.Duration(secs * float64(time.Second)))
	var n int64
	var start time.Time
	for time.Now().Before(end) {
		c.SetDeadline(end)
		var k int
		if mode == "S" {
			k, err = c.Read(buf)
		} else {
			k, err = c.Write(buf)
		}
		if time.Now().After(warm) {
			if start.IsZero() {
				start = time.Now()
			}
			n += int64(k)
		}
		if err != nil {
			break
		}
	}
	el := time.Since(start).Seconds()
	fmt.Printf("%.0f\n", float64(n)*8/el)
}

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "serve" {
		serve(os.Args[2])
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "client" {
		s, _ := strconv.ParseFloat(os.Args[4], 64)
		client(os.Args[2], os.Args[3], s)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: bwload serve ADDR | bwload client ADDR S|R SECONDS")
	os.Exit(2)
}
