package packaging

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

var (
	// describeRe splits `git describe --tags --always --dirty` output: a
	// tag, the commits since it and the abbreviated hash; or a bare hash.
	describeRe = regexp.MustCompile(`^(?:(.+)-([0-9]+)-g([0-9a-f]+)|([0-9a-f]{4,40}))$`)
	// tagRe is a release tag, with at least one dot (so that no all-digit
	// commit hash passes for one): v1.2.3, 1.2, v2.0.0-rc1.
	tagRe = regexp.MustCompile(`^v?([0-9]+(?:\.[0-9]+)+)(?:[-~.]?((?:alpha|beta|rc|pre)[0-9.]*))?$`)
)

// DebianVersion maps `git describe --tags --always --dirty` output to a
// Debian package version, which must start with a digit and sort in the
// order of the releases:
//
//	v1.2.3                  -> 1.2.3
//	v1.2.3-rc1              -> 1.2.3~rc1        (before 1.2.3)
//	v1.2.3-4-gabc1234       -> 1.2.3+git20251130.4.abc1234
//	abc1234 (no tag)        -> 0.0~git20251130.abc1234
//	any of them + "-dirty"  -> the same + "+dirty"
//
// commit is the time of the commit described (its date, in UTC, goes into
// snapshot versions). A tag that is not a release version is an error.
func DebianVersion(describe string, commit time.Time) (string, error) {
	d := strings.TrimSpace(describe)
	dirty := strings.HasSuffix(d, "-dirty")
	d = strings.TrimSuffix(d, "-dirty")
	if rel, err := releaseVersion(d); err == nil {
		// Exactly on a release tag.
		if dirty {
			rel += "+dirty"
		}
		return rel, nil
	}
	m := describeRe.FindStringSubmatch(d)
	if m == nil {
		return "", fmt.Errorf("version: %q is not what git describe --tags --always prints", describe)
	}
	date := commit.UTC().Format("20060102")
	var v string
	switch {
	case m[4] != "":
		v = "0.0~git" + date + "." + m[4]
	default:
		tag, n, hash := m[1], m[2], m[3]
		rel, err := releaseVersion(tag)
		if err != nil {
			return "", err
		}
		v = rel + "+git" + date + "." + n + "." + hash
	}
	if dirty {
		v += "+dirty"
	}
	return v, nil
}

// releaseVersion maps a release tag to a Debian upstream version.
func releaseVersion(tag string) (string, error) {
	m := tagRe.FindStringSubmatch(tag)
	if m == nil {
		return "", fmt.Errorf("version: tag %q is not a release version (v1.2.3 or v1.2.3-rc1)", tag)
	}
	if m[2] != "" {
		return m[1] + "~" + m[2], nil
	}
	return m[1], nil
}
