package version

import (
	"runtime/debug"
	"testing"
)

func TestRevisionFromWhatGoRecorded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings []debug.BuildSetting
		want     string
	}{
		{"clean checkout", []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}, "abc"},
		{"changed tree", []debug.BuildSetting{{Key: "vcs.modified", Value: "true"}, {Key: "vcs.revision", Value: "abc"}}, "abc-dirty"},
		{"no version control (-buildvcs=false)", []debug.BuildSetting{{Key: "GOOS", Value: "linux"}}, ""},
	} {
		if got := fromVCS(tc.settings); got != tc.want {
			t.Errorf("%s: revision %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestAnUnstampedBuildSaysSo(t *testing.T) {
	info := Get()
	if info.Version != "v0.0.0-dev" || info.GoVersion == "" || info.Platform == "" {
		t.Errorf("unstamped Get() = %+v, want version v0.0.0-dev with the toolchain and platform", info)
	}
	info = Info{Version: "v1.2.3", GoVersion: "go1.26.8", Platform: "linux/arm64", Kubernetes: "v1.37.1"}
	if s, want := info.String(), "v1.2.3 (revision unknown, go1.26.8 linux/arm64, kube-scheduler v1.37.1)"; s != want {
		t.Errorf("String() = %q, want %q", s, want)
	}
}
