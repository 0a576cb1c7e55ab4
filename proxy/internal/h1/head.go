package h1

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
)

// leanHead is the head of an answer in the shape nearly every instance
// sends: HTTP/1.1, a final status with a body (not 1xx, 204 or 304), a
// valid Content-Length, no Transfer-Encoding or Trailer, every line well
// formed and the whole head inside the connection's buffer.
type leanHead struct {
	resp   *http.Response
	length int64
}

// parseLeanHead reads such a head from br with one allocation for its
// text, where http.ReadResponse spends a dozen (docs/benchmarks.md). ok is
// false, with nothing consumed, for a head of any other shape: the caller
// then hands the same bytes to http.ReadResponse, which stays the
// reference for everything unusual. err is a read error met before the
// head was complete (the answer is lost either way).
func parseLeanHead(br *bufio.Reader, req *http.Request) (h leanHead, ok bool, err error) {
	if req.Method == http.MethodHead {
		return h, false, nil
	}
	var buf []byte
	end := 0
	for {
		buf, _ = br.Peek(br.Buffered())
		if end = headEnd(buf); end != 0 {
			break
		}
		if br.Buffered() == br.Size() {
			return h, false, nil // longer than the buffer: ReadResponse reads on
		}
		// Peeking past what is buffered waits for at least one more byte.
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return h, false, err
		}
	}
	if end < 0 {
		return h, false, nil // a bare LF ends a line: not the lean shape
	}
	text := string(buf[:end])
	h, ok = leanFields(text)
	if !ok {
		return h, false, nil
	}
	h.resp.Request = req
	br.Discard(end)
	return h, true, nil
}

// headEnd is the length of the head in buf (through its blank line), 0
// when buf holds no complete head yet, and -1 when a line in it ends with
// a bare LF.
func headEnd(buf []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return 0
		}
		j += i
		if j == 0 || buf[j-1] != '\r' {
			return -1
		}
		if j == i+1 { // "\r\n" alone: the blank line
			return j + 1
		}
		i = j + 1
	}
}

// leanFields parses a complete head (status line, fields, blank line, all
// CRLF-terminated) into a Response whose strings all share text. headEnd
// has checked that every LF in text follows a CR, so a line ends at the
// next LF, found with the faster single-byte search. It is one pass, a
// line over 80: split, its steps would pass the half-read head around.
func leanFields(text string) (h leanHead, ok bool) {
	const proto = "HTTP/1.1 "
	if len(text) < len(proto)+3 || text[:len(proto)] != proto {
		return h, false
	}
	eol := strings.IndexByte(text, '\n') - 1
	status := text[len(proto):eol]
	if len(status) < 3 {
		return h, false
	}
	code := 0
	for i := 0; i < 3; i++ {
		c := status[i]
		if c < '0' || c > '9' {
			return h, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified ||
		(len(status) > 3 && status[3] != ' ') || !ValidText(status) {
		return h, false
	}
	rest := text[eol+2 : len(text)-2] // the field lines, each ending in CRLF
	n := strings.Count(rest, "\n")
	header := make(http.Header, n)
	values := make([]string, n)
	length := int64(-1)
	closing := false
	for i := 0; i < n; i++ {
		eol := strings.IndexByte(rest, '\n')
		line := rest[:eol-1]
		rest = rest[eol+1:]
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || !IsToken(line[:colon]) {
			return h, false // includes obs-fold (a line starting with a space)
		}
		name := http.CanonicalHeaderKey(line[:colon])
		value := strings.Trim(line[colon+1:], " \t")
		if !ValidText(value) {
			return h, false
		}
		switch name {
		case "Content-Length":
			l, ok := parseLength(value)
			if !ok || (length >= 0 && l != length) {
				return h, false
			}
			if length >= 0 {
				continue // a repeat of the same length is kept once, as ReadResponse does
			}
			length = l
		case "Transfer-Encoding", "Trailer":
			return h, false
		case "Connection":
			for tok := range strings.SplitSeq(value, ",") { // no slice: nginx sends "keep-alive" on every answer
				if strings.EqualFold(strings.TrimSpace(tok), "close") {
					closing = true
				}
			}
		}
		values[i] = value
		if prev, dup := header[name]; dup {
			header[name] = append(prev, value)
		} else {
			header[name] = values[i : i+1 : i+1]
		}
	}
	if length < 0 {
		return h, false // delimited by the connection closing: rare, left to ReadResponse
	}
	if closing {
		delete(header, "Connection") // as ReadResponse does once it has noted Close
	}
	h.length = length
	h.resp = &http.Response{
		Status: status, StatusCode: code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: header, ContentLength: length, Close: closing,
	}
	return h, true
}

// parseLength parses a Content-Length: digits only, no sign, no overflow.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
