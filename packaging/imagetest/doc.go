// Package imagetest holds only tests: the container image that make image
// writes, loaded into podman and run. make test-image builds the image
// from test-deb's package and runs them with MP_HSM_IMAGE naming the
// archive; without it they skip. See image_test.go.
package imagetest
