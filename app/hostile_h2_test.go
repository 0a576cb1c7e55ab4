package app

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// hostileH2 is an h2c instance written frame by frame: it answers each
// request by what its path asks for, misbehaving on purpose.
func hostileH2(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var refused atomic.Bool
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveHostileH2(c, &refused)
		}
	}()
	return ln.Addr().String()
}

func serveHostileH2(c net.Conn, refused *atomic.Bool) {
	defer c.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	dec := hpack.NewDecoder(4096, nil)
	head := func(id uint32, end bool, fields ...string) {
		buf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndStream: end, EndHeaders: true})
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			fields, _ := dec.DecodeFull(f.HeaderBlockFragment())
			path := ""
			for _, hf := range fields {
				if hf.Name == ":path" {
					path = hf.Value
				}
			}
			id := f.StreamID
			switch path {
			case "/ok":
				head(id, false, ":status", "200")
				fr.WriteData(id, true, []byte("fine"))
			case "/huge-header": // over upstream.max_response_header_bytes
				head(id, true, ":status", "200", "x-big", strings.Repeat("a", 70<<10))
			case "/reset-mid-body": // headers and some body, then a reset
				head(id, false, ":status", "200")
				fr.WriteData(id, false, []byte("partial"))
				fr.WriteRSTStream(id, http2.ErrCodeInternal)
			case "/reset-at-once":
				fr.WriteRSTStream(id, http2.ErrCodeInternal)
			case "/refused-once": // REFUSED_STREAM: nothing was processed, so it may be retried
				if !refused.Swap(true) {
					fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
					continue
				}
				head(id, false, ":status", "200")
				fr.WriteData(id, true, []byte("retried"))
			case "/bad-status":
				head(id, true, ":status", "abc")
			case "/goaway": // answers, then closes the connection
				head(id, false, ":status", "200")
				fr.WriteData(id, true, []byte("last"))
				fr.WriteGoAway(id, http2.ErrCodeNo, nil)
				time.Sleep(10 * time.Millisecond)
				return
			}
		}
	}
}

// A hostile HTTP/2 instance (h2c pool): an oversized answer head, a stream
// reset before or during the answer, a malformed status and a GOAWAY each
// cost their own request only (502, or a cut body once the answer began),
// and the next request is served. A stream refused (REFUSED_STREAM: the
// instance processed nothing) is retried, as http.Transport does.
func TestHostileH2Instance(t *testing.T) {
	r := startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
routes:
  - name: rpc
    health: { passive: { consecutive_failures: 0 } }
    pools: [{ name: a, weight: 100, protocol: h2c, instances: ["%s"] }]
`, hostileH2(t)))
	for _, tc := range []struct {
		path     string
		status   int
		body     string
		cutShort bool // the answer began, then broke: the body read fails
	}{
		{"/ok", 200, "fine", false},
		{"/huge-header", 502, "", false},
		{"/ok", 200, "fine", false},
		{"/reset-at-once", 502, "", false},
		{"/refused-once", 200, "retried", false},
		{"/reset-mid-body", 200, "partial", true},
		{"/ok", 200, "fine", false},
		{"/bad-status", 502, "", false},
		{"/goaway", 200, "last", false},
		{"/ok", 200, "fine", false},
	} {
		resp, err := r.client.Get(r.proxy + tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (err != nil) != tc.cutShort || (!tc.cutShort && tc.body != "" && string(body) != tc.body) {
			t.Errorf("%s: %d %q (read error %v); want %d %q cut=%v", tc.path, resp.StatusCode, body, err, tc.status, tc.body, tc.cutShort)
		}
	}
	if got := r.srv.requests.Pool("rpc", "a").Now(); got.Errors < 3 {
		t.Errorf("window: %+v; the 502s are errors", got)
	}
}
