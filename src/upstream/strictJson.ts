/**
 * The first member name that occurs twice in one object of a JSON text, or undefined.
 *
 * RFC 8259 §4: "The names within an object SHOULD be unique", and when they are not, parsers
 * disagree on which value wins (JSON.parse takes the last). An introspection answer such as
 * `{"active": false, …, "active": true}` means different things to different readers, so
 * credgate refuses it as a bad answer instead of picking one. Names are compared after unescaping
 * (`"\u0061ctive"` is `"active"`). Expects text JSON.parse has already accepted.
 */
export function duplicateMemberName(text: string): string | undefined {
  // One set of names per open object; null for an open array.
  const stack: (Set<string> | null)[] = [];
  let expectName = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const start = i;
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      const top = stack[stack.length - 1];
      if (expectName && top) {
        const name = JSON.parse(text.slice(start, i + 1)) as string;
        if (top.has(name)) return name;
        top.add(name);
        expectName = false;
      }
    } else if (c === '{') {
      stack.push(new Set());
      expectName = true;
    } else if (c === '[') {
      stack.push(null);
    } else if (c === '}' || c === ']') {
      stack.pop();
    } else if (c === ',') {
      expectName = stack[stack.length - 1] != null;
    }
  }
  return undefined;
}
