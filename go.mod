module github.com/rtsptunnel/rtsptunnel

go 1.26.0
