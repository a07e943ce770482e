// bwload: the e2e workload. `bwload serve ADDR` accepts TCP connections; a client
// sends one byte, 'S' (server sends to it) or 'R' (server receives), then the
// bulk transfer runs until the client closes. `bwload client ADDR S|R SECONDS`
// runs one transfer and prints the goodput in bits per second: what the
// connection delivered (acknowledged, or received) after a second of warm-up.
// `bwload flows ADDR S|R SECONDS FLOWS CC` runs FLOWS transfers at once with
// congestion control CC and prints "goodput retransmitted segments": the last
// two are the sending sockets' own counts (mode R only; 0 for S).
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
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
	warm := time.Now().Add(time.Second)
	r, err := flow(addr, mode, "", warm, warm.Add(time.Duration(secs*float64(time.Second))))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%.0f\n", float64(r.moved)*8/r.secs)
}

// struct tcp_info read raw (package syscall has no getter for it); fields
// used: tcpi_total_retrans (byte 100), tcpi_bytes_acked (120),
// tcpi_bytes_received (128), tcpi_segs_out (136).
func tcpInfo(raw syscall.RawConn) (info [232]byte, ok bool) {
	raw.Control(func(fd uintptr) {
		size := uint32(len(info))
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
		ok = e == 0 && size >= 144
	})
	return
}

func delivered(info [232]byte, mode string) int64 {
	if mode == "S" {
		return int64(binary.LittleEndian.Uint64(info[128:]))
	}
	return int64(binary.LittleEndian.Uint64(info[120:]))
}

// One of `flows` transfers: bytes moved after the warm-up, the seconds they
// took, and (sending) the socket's retransmissions and segments sent.
type result struct {
	moved        int64
	secs         float64
	retrans, seg uint64
}

func flow(addr, mode, cc string, warm, end time.Time) (result, error) {
	// The first second (slow start, burst) is not counted. cc "" keeps the
	// node's default.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		if cc == "" {
			return nil
		}
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CONGESTION, cc)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	// Close with a reset: a plain close leaves what is still in the send buffer
	// to the kernel, which keeps sending it after we exit; at a low limit that
	// is seconds of data, and it competed with the next measurement (seen
	// between two nodes: a later single flow paced as one of up to 14 sockets).
	tc.SetLinger(0)
	tc.Write([]byte(mode))
	buf := make([]byte, 128<<10)
	raw, _ := tc.SyscallConn()
	// Goodput is what the connection delivered in [warm, end]: the socket's own
	// tcpi_bytes_acked (sending) or tcpi_bytes_received (receiving), read at
	// both moments, whatever the writes and reads were doing then.
	type sample struct {
		bytes int64
		at    time.Time
	}
	first := make(chan sample, 1)
	go func() {
		time.Sleep(time.Until(warm))
		info, _ := tcpInfo(raw)
		first <- sample{delivered(info, mode), time.Now()}
	}()
	for time.Now().Before(end) {
		tc.SetDeadline(end)
		var err error
		if mode == "S" {
			_, err = tc.Read(buf)
		} else {
			_, err = tc.Write(buf)
		}
		if err != nil {
			break
		}
	}
	info, ok := tcpInfo(raw)
	last := sample{delivered(info, mode), time.Now()}
	f := <-first
	r := result{moved: last.bytes - f.bytes, secs: last.at.Sub(f.at).Seconds()}
	if ok && mode != "S" {
		r.retrans = uint64(binary.LittleEndian.Uint32(info[100:]))
		r.seg = uint64(binary.LittleEndian.Uint32(info[136:]))
	}
	return r, nil
}

func flows(addr, mode string, secs float64, n int, cc string) {
	warm := time.Now().Add(time.Second)
	end := warm.Add(time.Duration(secs * float64(time.Second)))
	results := make([]result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = flow(addr, mode, cc, warm, end)
		}(i)
	}
	wg.Wait()
	var bits, retrans, segs float64
	for i, r := range results {
		if errs[i] != nil {
			fmt.Fprintln(os.Stderr, errs[i])
			os.Exit(1)
		}
		if r.secs > 0 {
			bits += float64(r.moved) * 8 / r.secs
		}
		retrans += float64(r.retrans)
		segs += float64(r.seg)
	}
	fmt.Printf("%.0f %.0f %.0f\n", bits, retrans, segs)
}

func main() {
	if len(os.Args) == 7 && os.Args[1] == "flows" {
		s, _ := strconv.ParseFloat(os.Args[4], 64)
		n, _ := strconv.Atoi(os.Args[5])
		if n < 1 {
			n = 1
		}
		flows(os.Args[2], os.Args[3], s, n, os.Args[6])
		return
	}
	if len(os.Args) >= 3 && os.Args[1] == "serve" {
		serve(os.Args[2])
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "client" {
		s, _ := strconv.ParseFloat(os.Args[4], 64)
		client(os.Args[2], os.Args[3], s)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: bwload serve ADDR | bwload client ADDR S|R SECONDS | bwload flows ADDR S|R SECONDS FLOWS CC")
	os.Exit(2)
}
