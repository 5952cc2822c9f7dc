// Package tests holds the end-to-end tests that run the real binaries together.
package tests
