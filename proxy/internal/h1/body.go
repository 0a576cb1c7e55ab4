package h1

import "io"

// body is an answer's body. Read to its end on a connection that may stay
// open, it gives the connection back to the pool; closed early or broken,
// it closes the connection (the rest of the answer is still on it).
type body struct {
	c    *conn
	std  io.ReadCloser // from http.ReadResponse; nil for a lean answer
	left int64         // a lean answer's bytes still to read
	keep bool
	done bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.std != nil {
		n, err := b.std.Read(p)
		if err != nil {
			b.finish(err == io.EOF)
		}
		return n, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.c.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		b.finish(true)
		return n, io.EOF
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.finish(false)
	}
	return n, err
}

func (b *body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *body) finish(eof bool) {
	b.done = true
	b.c.release(eof, b.keep)
}
