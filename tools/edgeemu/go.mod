module github.com/rtsptunnel/rtsptunnel/tools/edgeemu

go 1.26

require (
	github.com/amenzhinsky/iothub v0.9.1 // indirect
	github.com/coder/websocket v1.8.15 // indirect
	github.com/gorilla/websocket v1.5.0 // indirect
	github.com/mochi-mqtt/server/v2 v2.7.9 // indirect
	github.com/rs/xid v1.4.0 // indirect
)
