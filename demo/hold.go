package demo

import (
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// heldLog holds a logger's lines until release: canaryd logs while it
// starts (a rollout's first step, say), and the demo's banner, printed
// once everything listens, must come first, not amid them.
type heldLog struct {
	mu      sync.Mutex
	holding bool
	lines   []heldLine
}

type heldLine struct {
	core   zapcore.Core
	entry  zapcore.Entry
	fields []zapcore.Field
}

// hold returns log with its lines held until release.
func hold(log *zap.Logger) (*zap.Logger, func()) {
	h := &heldLog{holding: true}
	held := log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return heldCore{Core: c, h: h} }))
	return held, h.release
}

func (h *heldLog) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.lines {
		l.core.Write(l.entry, l.fields)
	}
	h.lines, h.holding = nil, false
}

type heldCore struct {
	zapcore.Core
	h *heldLog
}

func (c heldCore) With(fields []zapcore.Field) zapcore.Core {
	return heldCore{Core: c.Core.With(fields), h: c.h}
}

func (c heldCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c heldCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	if c.h.holding {
		c.h.lines = append(c.h.lines, heldLine{core: c.Core, entry: e, fields: append([]zapcore.Field(nil), fields...)})
		return nil
	}
	return c.Core.Write(e, fields)
}
