package admin

import (
	"encoding/json"
	"fmt"
	"strings"
)

// APIError is an answer of the self-service API other than 2xx: its HTTP
// status and what it said.
type APIError struct {
	Method, URL string
	Status      int
	Code        string // "error", when the body had one
	Message     string // "error_description" or "message", or the body's start
}

func newAPIError(method, u string, status int, body []byte) *APIError {
	e := &APIError{Method: method, URL: u, Status: status}
	var b struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Message     string `json:"message"`
	}
	if json.Unmarshal(body, &b) == nil {
		e.Code = b.Error
		e.Message = b.Description
		if e.Message == "" {
			e.Message = b.Message
		}
	}
	if e.Code == "" && e.Message == "" {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "..."
		}
	}
	return e
}

// Error returns one line: the request, the status and what the API said.
func (e *APIError) Error() string {
	s := fmt.Sprintf("self-service API: %s %s: HTTP %d", e.Method, e.URL, e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}
