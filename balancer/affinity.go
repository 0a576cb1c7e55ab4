package balancer

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SecureMode is when the affinity cookie carries the Secure attribute.
type SecureMode uint8

// Secure modes.
const (
	SecureAuto   SecureMode = iota // on answers to TLS connections
	SecureAlways                   // always
	SecureNever                    // never
)

// AffinitySpec is canaryd's own affinity cookie (sticky.set): a client
// without one is given a random bucket, routed by it, and told it in the
// answer; later requests are routed by the bucket they carry. It is
// plain data, compared by value.
type AffinitySpec struct {
	Cookie   string
	TTL      time.Duration // Max-Age; 0: a session cookie
	Secure   SecureMode
	SameSite http.SameSite
	Domain   string
	Path     string
	// Secret signs the bucket (HMAC-SHA256, keyed per route); "": the
	// value is the bare bucket.
	Secret string
}

// affinity is an AffinitySpec compiled for one route.
type affinity struct {
	cookie string
	// attrs is every attribute of Set-Cookie but Secure, with their "; ".
	attrs  string
	secure SecureMode
	signed bool
	// ipad and opad are the route's HMAC key blocks (a key of its own,
	// derived from the secret and the route's name, so that a cookie of
	// another route does not verify here).
	ipad, opad [sha256.BlockSize]byte
}

// affinityVersion starts every value: a later format can tell its own.
const affinityVersion = "1."

// macHexLen is the signature's length in hex: 64 bits, which a client
// cannot guess (each guess is a request) and which keeps the cookie short.
const macHexLen = 16

func compileAffinity(s *AffinitySpec, route string) *affinity {
	a := &affinity{cookie: s.Cookie, secure: s.Secure, signed: s.Secret != ""}
	var b strings.Builder
	b.WriteString("; Path=")
	b.WriteString(s.Path)
	if s.Domain != "" {
		b.WriteString("; Domain=")
		b.WriteString(s.Domain)
	}
	if s.TTL > 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(int64(s.TTL/time.Second), 10))
	}
	b.WriteString("; HttpOnly")
	switch s.SameSite {
	case http.SameSiteLaxMode:
		b.WriteString("; SameSite=Lax")
	case http.SameSiteStrictMode:
		b.WriteString("; SameSite=Strict")
	case http.SameSiteNoneMode:
		b.WriteString("; SameSite=None")
	}
	a.attrs = b.String()
	if a.signed {
		m := hmac.New(sha256.New, []byte(s.Secret))
		m.Write([]byte("canaryd affinity cookie\x00" + route))
		key := m.Sum(nil) // 32 bytes: shorter than a block, used as is
		for i := range a.ipad {
			a.ipad[i], a.opad[i] = 0x36, 0x5c
		}
		for i, k := range key {
			a.ipad[i] ^= k
			a.opad[i] ^= k
		}
	}
	return a
}

// mac is the first 64 bits of HMAC-SHA256 of a value, computed on the
// stack (the hash.Hash of crypto/hmac would allocate on every request).
func (a *affinity) mac(value string) [macHexLen / 2]byte {
	var in [sha256.BlockSize + 16]byte
	copy(in[:], a.ipad[:])
	n := copy(in[sha256.BlockSize:], value)
	inner := sha256.Sum256(in[:sha256.BlockSize+n])
	var out [sha256.BlockSize + sha256.Size]byte
	copy(out[:], a.opad[:])
	copy(out[sha256.BlockSize:], inner[:])
	sum := sha256.Sum256(out[:])
	var m [macHexLen / 2]byte
	copy(m[:], sum[:])
	return m
}

// bucket reads a valid affinity cookie's bucket. A missing, malformed or
// wrongly signed value is no bucket: the client is given a new one (and
// a cookie of an older config, another route's or an old format, is
// ignored and replaced that way).
func (a *affinity) bucket(h http.Header) (int, bool) {
	v, ok := cookieValue(h, a.cookie)
	if !ok || !strings.HasPrefix(v, affinityVersion) {
		return 0, false
	}
	rest := v[len(affinityVersion):]
	digits, sig, hasSig := strings.Cut(rest, ".")
	if hasSig != a.signed || len(digits) == 0 || len(digits) > 4 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	b := 0
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		b = b*10 + int(c-'0')
	}
	if b >= Slots {
		return 0, false
	}
	if a.signed {
		var got [macHexLen / 2]byte
		if len(sig) != macHexLen {
			return 0, false
		}
		if _, err := hex.Decode(got[:], []byte(sig)); err != nil {
			return 0, false
		}
		want := a.mac(v[:len(affinityVersion)+len(digits)])
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			return 0, false
		}
	}
	return b, true
}

// value is the cookie value for a bucket.
func (a *affinity) value(b int) string {
	v := affinityVersion + strconv.Itoa(b)
	if a.signed {
		m := a.mac(v)
		v += "." + hex.EncodeToString(m[:])
	}
	return v
}

// AffinityCookie is the Set-Cookie line that gives a client bucket b, on
// an answer over TLS or not (for Secure: auto). "" when the route sets no
// cookie.
func (r *Route) AffinityCookie(b int, tls bool) string {
	a := r.affinity
	if a == nil || b < 0 {
		return ""
	}
	s := a.cookie + "=" + a.value(b) + a.attrs
	if a.secure == SecureAlways || (a.secure == SecureAuto && tls) {
		s += "; Secure"
	}
	return s
}
