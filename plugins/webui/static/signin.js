// The answer to a sign-in link: it carries the page's half of the new session in a <meta>
// (never in an address, where another site could put one). Keep it, then open the page.

const KEY = "meshhub.session";
const half = document.querySelector('meta[name="meshhub-session"]')?.content;
if (half) localStorage.setItem(KEY, half);
location.replace("/");
