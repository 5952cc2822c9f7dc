// Package certfile serves a TLS certificate from PEM files and picks up a
// new certificate when the files change, so that operators can rotate
// certificates (cert-manager, certbot) without restarting the relay.
//
// Use a [Reloader] as tls.Config.GetCertificate:
//
//	r := &certfile.Reloader{CertFile: crt, KeyFile: key, Logger: log}
//	if err := r.Initialize(); err != nil { ... }
//	conf := &tls.Config{GetCertificate: r.GetCertificate}
//
// Changes are found by polling, at most once per CheckInterval and only
// when a handshake asks for the certificate: no goroutine, no inotify. A
// file counts as changed when its modification time, size or inode differs.
// The inode catches the usual atomic rotations even when they keep the size
// and land within one timestamp tick:
//
//   - write a new file, then rename it over the old one (certbot deploy
//     hooks, most scripts);
//   - a Kubernetes secret volume swaps its "..data" symlink to a new
//     directory; stat follows symlinks, so the files' inodes change.
//
// A rotation is rarely atomic across the two files: the certificate may be
// replaced before the key. A pair that fails to load (half written, key not
// matching yet) is retried at every check while the previous pair is
// served, and logged once per change of the files.
package certfile
