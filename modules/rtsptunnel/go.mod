module github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel

go 1.26

require (
	github.com/amenzhinsky/iothub v0.9.1 // indirect
	github.com/coder/websocket v1.8.15 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
)
