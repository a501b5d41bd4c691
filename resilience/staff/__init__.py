"""Staff access: the admin login limited like the API's, revocable staff sessions, audited logins, and a second
factor (django-otp) for the live controls."""
