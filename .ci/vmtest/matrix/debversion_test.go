package main

import (
	"os/exec"
	"testing"
)

// dpkg is the ground truth for Debian version order.
func TestCompareDebVersionsAgreesWithDpkg(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	versions := []string{
		"5.10.262-1", "5.10.251-5", "5.10.223-1", "5.10.26-1", "6.1.192-2", "6.1.192-2+b1",
		"6.12.118-1", "6.12.118~rc1-1", "6.12.9-1", "1:6.1.0-1", "6.1.0", "6.1.0-1",
		"6.1.0~bpo12-1", "6.1.0a-1", "6.1.0+deb12u1-1", "6.1.00-1", "6.1.0-1.1",
	}
	for _, a := range versions {
		for _, b := range versions {
			got := sign(compareDebVersions(a, b))
			want := 0
			if exec.Command("dpkg", "--compare-versions", a, "lt", b).Run() == nil {
				want = -1
			} else if exec.Command("dpkg", "--compare-versions", a, "gt", b).Run() == nil {
				want = 1
			}
			if got != want {
				t.Errorf("compare(%q, %q) = %d, dpkg says %d", a, b, got, want)
			}
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
