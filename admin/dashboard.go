package admin

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed ui
var ui embed.FS

// Dashboard serves the web UI: / and /ui/*, all embedded (no build step,
// nothing fetched from elsewhere).
func Dashboard() http.Handler {
	sub, _ := fs.Sub(ui, "ui") // cannot fail: "ui" is embedded above
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:")
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, sub, "index.html")
			return
		}
		http.StripPrefix("/ui", files).ServeHTTP(w, r)
	})
}
