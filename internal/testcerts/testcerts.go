// Package testcerts makes real X.509 material for tests: a CA and leaf
// certificates signed by it (ECDSA P-256). Only tests import it.
package testcerts

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA signs leaves.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is the CA certificate, for a CA file.
	PEM []byte
	// Pool holds the CA, for a client's RootCAs.
	Pool *x509.CertPool
}

var serial atomic.Int64

func nextSerial() *big.Int { return big.NewInt(time.Now().UnixNano() + serial.Add(1)) }

// NewCA makes a self-signed CA.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: pool}
}

// Leaf is a certificate for names (DNS names or IP addresses), good for
// servers and clients, valid for a day.
func (ca *CA) Leaf(t testing.TB, names ...string) (certPEM, keyPEM []byte) {
	return ca.LeafUntil(t, time.Now().Add(24*time.Hour), names...)
}

// LeafUntil is Leaf with its expiry.
func (ca *CA) LeafUntil(t testing.TB, notAfter time.Time, names ...string) (certPEM, keyPEM []byte) {
	return ca.LeafWith(t, LeafOptions{NotAfter: notAfter}, names...)
}

// LeafOptions vary a leaf.
type LeafOptions struct {
	// NotAfter: default a day from now.
	NotAfter time.Time
	// RSA makes a 2048-bit RSA key instead of ECDSA P-256.
	RSA bool
	// OCSPServer is the responder URL the leaf names. Default none.
	OCSPServer string
	// Serial: default a fresh one.
	Serial *big.Int
}

// LeafWith is Leaf with options.
func (ca *CA) LeafWith(t testing.TB, o LeafOptions, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if o.Serial == nil {
		o.Serial = nextSerial()
	}
	var key crypto.Signer
	var err error
	if o.RSA {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.KeyUsageDigitalSignature
	if o.RSA {
		usage |= x509.KeyUsageKeyEncipherment // RSA key exchange, for tests that it is refused
	}
	tmpl := &x509.Certificate{
		SerialNumber: o.Serial, NotBefore: time.Now().Add(-time.Hour), NotAfter: o.NotAfter,
		KeyUsage:    usage,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if o.OCSPServer != "" {
		tmpl.OCSPServer = []string{o.OCSPServer}
	}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

// KeyPEM is the CA's private key (PKCS #8 PEM), for tools that sign as
// the CA (an OCSP responder).
func (ca *CA) KeyPEM(t testing.TB) []byte {
	kb, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

// WriteLeaf writes a Leaf for names to dir/base.crt and dir/base.key.
func (ca *CA) WriteLeaf(t testing.TB, dir, base string, names ...string) (certFile, keyFile string) {
	t.Helper()
	c, k := ca.Leaf(t, names...)
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	Write(t, certFile, c)
	Write(t, keyFile, k)
	return certFile, keyFile
}

// WriteCA writes the CA certificate to dir/base.crt.
func (ca *CA) WriteCA(t testing.TB, dir, base string) string {
	t.Helper()
	f := filepath.Join(dir, base+".crt")
	Write(t, f, ca.PEM)
	return f
}

// Write writes a file or fails the test.
func Write(t testing.TB, file string, data []byte) {
	t.Helper()
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
