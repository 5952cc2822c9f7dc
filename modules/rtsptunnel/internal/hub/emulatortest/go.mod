module github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/hub/emulatortest

go 1.26.0

require go.uber.org/goleak v1.3.0
