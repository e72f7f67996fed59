package safefile

import (
	"errors"
	"os"
	"syscall"
)

// OpenAppend opens path to append to, as the audit log, creating it with
// perm if missing. It refuses a symbolic link (the file written is the one
// named), never blocks on a FIFO, and takes only a regular file.
func OpenAppend(path string, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ELOOP):
			return nil, &Error{Path: path, Reason: "is a symbolic link; give the path of the file itself", Err: ErrNotRegular}
		case errors.Is(err, syscall.ENXIO):
			return nil, &Error{Path: path, Reason: "is a FIFO; give a regular file", Err: ErrNotRegular}
		}
		return nil, openError(path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, &Error{Path: path, Reason: "cannot be opened: " + err.Error(), Err: err}
	}
	if err := regular(path, fi); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
