// The site form's fields, checked on the page as citrus-backend checks them (validate_site_input in
// lib/backend/src/site_service.cpp), so that a mistake is shown next to its field before anything is
// sent. The server stays the judge: its answer, which names the field, is shown the same way.

const encoder = new TextEncoder();

function byteLength(text) {
  return encoder.encode(text).length;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const ALNUM = /^[A-Za-z0-9]$/;

/** A DNS name: dot-separated labels of letters, digits and inner hyphens (1..63 each, 253 in all). */
function isHostName(host) {
  if (host.length === 0 || host.length > 253) return false;
  return host.split('.').every((label) =>
    label.length > 0 && label.length <= 63 && !label.startsWith('-') && !label.endsWith('-') && /^[A-Za-z0-9-]+$/.test(label));
}

/** The characters RFC 3986 allows in a path, query and fragment (percent escapes checked apart). */
function isUriChar(c) {
  return ALNUM.test(c) || "-._~:/?#[]@!$&'()*+,;=%".includes(c);
}

/**
 * Whether `url` is a site address the backend accepts: http:// or https:// (any case), a host (a DNS
 * name or a bracketed IPv6 literal; no user info), an optional port 1..65535, then URI characters only.
 * Byte for byte the server's is_site_url(), without its length limit.
 */
export function isSiteUrl(url) {
  if (typeof url !== 'string') return false;
  const scheme = /^https?:\/\//i.exec(url);
  if (!scheme) return false;
  const rest = url.slice(scheme[0].length);
  const cut = rest.search(/[/?#]/);
  const end = cut < 0 ? rest.length : cut;
  let authority = rest.slice(0, end);
  const tail = rest.slice(end);
  if (authority === '' || authority.includes('@')) return false;
  let port = '';
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 3) return false;
    if (!/^[0-9A-Fa-f:.]+$/.test(authority.slice(1, close))) return false;
    const after = authority.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) return false;
    if (after !== '') {
      port = after.slice(1);
      if (port === '') return false;
    }
  } else {
    const colon = authority.indexOf(':');
    if (colon >= 0) {
      port = authority.slice(colon + 1);
      if (port === '') return false;
      authority = authority.slice(0, colon);
    }
    if (!isHostName(authority)) return false;
  }
  if (port !== '') {
    if (port.length > 5 || !/^[0-9]+$/.test(port)) return false;
    const value = Number(port);
    if (value < 1 || value > 65535) return false;
  }
  for (let i = 0; i < tail.length; i += 1) {
    if (!isUriChar(tail[i])) return false;
    if (tail[i] === '%' && !/^%[0-9A-Fa-f]{2}/.test(tail.slice(i, i + 3))) return false;
  }
  return true;
}

/**
 * What is wrong with a site's name and address, as sentences for the person at the form:
 * {name, url}, each absent when that field is right.
 */
export function siteFieldProblems(name, url) {
  const problems = {};
  if (!name) problems.name = 'Enter a name for the site.';
  else if (byteLength(name) > 100)  // the server counts UTF-8 bytes
    problems.name = 'The name is too long: use at most 100 characters (accented and other non-English letters count as two or more).';
  else if (CONTROL.test(name)) problems.name = 'The name must fit on one line.';

  if (!url) problems.url = 'Enter the address of the site.';
  else if (!/^https?:\/\//i.test(url)) problems.url = 'The address must start with https:// or http://.';
  else if (byteLength(url) > 255) problems.url = 'The address is too long: use at most 255 characters.';
  else if (/[\s"<>\\]/.test(url) || CONTROL.test(url)) problems.url = 'The address must not contain spaces, quotes or line breaks.';
  else if (!isSiteUrl(url))
    problems.url = 'Enter a full address with a host name, like https://example.com (no user name, a port from 1 to 65535).';
  return problems;
}

/** The sentence for a field the server refused (its answer's "field"), or '' for another field. */
export function serverFieldProblem(field) {
  if (field === 'name') return 'The server did not accept this name: use 1 to 100 characters on one line.';
  if (field === 'url') return 'The server did not accept this address: use a full http:// or https:// address with a host name.';
  return '';
}
