package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
)

// hostConfig is the part of a module's createOptions that hardens it.
type hostConfig struct {
	Privileged     *bool    `json:"Privileged"`
	CapDrop        []string `json:"CapDrop"`
	CapAdd         []string `json:"CapAdd"`
	SecurityOpt    []string `json:"SecurityOpt"`
	ReadonlyRootfs bool     `json:"ReadonlyRootfs"`
}

// templateHostConfig reads the rtsptunnel module's HostConfig from a
// deployment template.
func templateHostConfig(t *testing.T, name string) hostConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	var tmpl struct {
		ModulesContent struct {
			EdgeAgent struct {
				Desired struct {
					Modules map[string]struct {
						Settings struct {
							CreateOptions json.RawMessage `json:"createOptions"`
						} `json:"settings"`
					} `json:"modules"`
				} `json:"properties.desired"`
			} `json:"$edgeAgent"`
		} `json:"modulesContent"`
	}
	if err := json.Unmarshal(b, &tmpl); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	raw := tmpl.ModulesContent.EdgeAgent.Desired.Modules["rtsptunnel"].Settings.CreateOptions
	var s string
	if json.Unmarshal(raw, &s) == nil { // createOptions as a string, as some tools write it
		raw = json.RawMessage(s)
	}
	var opts struct {
		HostConfig hostConfig `json:"HostConfig"`
	}
	if err := json.Unmarshal(raw, &opts); err != nil {
		t.Fatalf("%s: createOptions: %v", name, err)
	}
	return opts.HostConfig
}

// TestTemplateHardening: SECURITY.md's container row — the deployment
// template runs the module unprivileged with every capability dropped,
// no-new-privileges and a read-only root; the debug template keeps the first
// three and adds only what a debugger needs (SYS_PTRACE, seccomp unconfined,
// a writable root), as SECURITY.md says. The images run as 65532 on
// distroless.
func TestTemplateHardening(t *testing.T) {
	prod := templateHostConfig(t, "deployment.template.json")
	if prod.Privileged == nil || *prod.Privileged || !slices.Equal(prod.CapDrop, []string{"ALL"}) || len(prod.CapAdd) != 0 ||
		!slices.Contains(prod.SecurityOpt, "no-new-privileges") || !prod.ReadonlyRootfs {
		t.Errorf("deployment.template.json HostConfig %+v: want Privileged false, CapDrop [ALL], no CapAdd, no-new-privileges, ReadonlyRootfs", prod)
	}
	debug := templateHostConfig(t, "deployment.debug.template.json")
	if debug.Privileged == nil || *debug.Privileged || !slices.Equal(debug.CapDrop, []string{"ALL"}) ||
		!slices.Contains(debug.SecurityOpt, "no-new-privileges") {
		t.Errorf("deployment.debug.template.json HostConfig %+v: want Privileged false, CapDrop [ALL], no-new-privileges", debug)
	}
	for _, c := range debug.CapAdd {
		if c != "SYS_PTRACE" {
			t.Errorf("debug template adds capability %s; SECURITY.md names only SYS_PTRACE", c)
		}
	}

	user := regexp.MustCompile(`(?m)^USER 65532(:65532)?$`)
	base := regexp.MustCompile(`(?m)^FROM .*gcr\.io/distroless/static-debian12:(debug-)?nonroot\s*$`)
	dockerfiles, _ := filepath.Glob("Dockerfile.*")
	if len(dockerfiles) == 0 {
		t.Fatal("no Dockerfiles")
	}
	for _, f := range dockerfiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !user.Match(b) || !base.Match(b) {
			t.Errorf("%s: want a distroless nonroot base and USER 65532", f)
		}
	}
}
