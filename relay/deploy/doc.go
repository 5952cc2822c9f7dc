// Package deploy holds no code: it is the home of the relay's deployment
// files, Dockerfile (the image), relay.service (a systemd unit) and
// kubernetes.yaml (Secret, Deployment, Service), and of the test that checks
// them offline against the relay's own settings.
package deploy
