// Package proctest runs the real servers tests start (etcd, dnsmasq) as
// child processes that can be stopped gently or killed, and waited for.
// Only tests and test helpers import it.
package proctest

import (
	"os/exec"
	"syscall"
	"time"
)

// Proc is a started child process.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts cmd and watches for its end.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

// Signal sends sig (SIGHUP: reload).
func (p *Proc) Signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM, waits up to grace, then kills; it returns once the
// process has ended.
func (p *Proc) Stop(grace time.Duration) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// Kill ends the process at once and waits for it.
func (p *Proc) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// Pid is the process's id (to read its CPU time in /proc).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }
