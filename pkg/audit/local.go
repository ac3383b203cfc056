package audit

import (
	"context"
	"net/http"
	"net/http/httptest"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// LocalUser is who reads a store file offline: whoever can read the file may read all of it.
const LocalUser = "repute:local-store-file"

// LocalClient answers from a store file opened in this process, through the same Server the
// scheduler runs, so offline forensics and the live API give the same answers for the same
// records. Current verdicts come from the store, as no live cache exists.
func LocalClient(records Records) *Client {
	s := &Server{
		Records: records,
		Authenticator: authenticator.RequestFunc(func(*http.Request) (*authenticator.Response, bool, error) {
			return &authenticator.Response{User: &user.DefaultInfo{Name: LocalUser}}, true, nil
		}),
		Authorizer: authorizer.AuthorizerFunc(func(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
			return authorizer.DecisionAllow, "", nil
		}),
	}
	return &Client{HTTP: &http.Client{Transport: inProcess{s}}, Server: "http://local-store"}
}

// inProcess is a RoundTripper that calls a handler directly.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	w := httptest.NewRecorder()
	t.h.ServeHTTP(w, r)
	return w.Result(), nil
}
