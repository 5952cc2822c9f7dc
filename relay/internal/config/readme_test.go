package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeDocumentsEverySetting keeps relay/README.md true: every flag
// and setting of the table in settings.go is in its reference, every
// flag the README names exists, and its config example is Example.
func TestReadmeDocumentsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	flags := map[string]bool{"config": true, "help": true}
	for _, s := range settings {
		if s.Flag != "" {
			flags[s.Flag] = true
			if !strings.Contains(readme, "`--"+s.Flag) {
				t.Errorf("README does not document --%s", s.Flag)
			}
		}
		key := s.Path[strings.LastIndex(s.Path, ".")+1:]
		if !strings.Contains(readme, "`"+key+"`") && !strings.Contains(readme, "`"+s.Path+"`") {
			t.Errorf("README does not document the setting %s", s.Path)
		}
		if s.Env != "" && !strings.Contains(readme, "`"+s.Env+"`") {
			t.Errorf("README does not document %s", s.Env)
		}
	}
	for _, m := range regexp.MustCompile("`--([a-z0-9-]+)").FindAllStringSubmatch(readme, -1) {
		if !flags[m[1]] {
			t.Errorf("README names --%s, which is not a flag", m[1])
		}
	}
	if !strings.Contains(readme, "```json\n"+Example+"\n```") {
		t.Error("README's config file example is not config.Example")
	}
}
