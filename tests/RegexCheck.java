// Tests regexes the way XNAT's RegExBasedSeriesImportFilter does: each pattern compiled with
// Pattern.CASE_INSENSITIVE only, then matcher(value).find() (a substring search).
//
// Usage: java tests/RegexCheck.java < pairs
// Reads lines "pattern<TAB>value" from standard input. Both fields are escaped so that a line
// is plain ASCII: "\\" is a backslash, "\t" a tab, "\n" a line feed, "\r" a carriage return,
// and a backslash, "u" and four hex digits one UTF-16 code unit (a character outside the BMP
// is two of them). Prints one line per input line: "match", "nomatch" or "error: <why>" (the
// pattern does not compile, or matching threw).

import java.io.BufferedReader;
import java.io.BufferedOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

public class RegexCheck {
    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        PrintStream out = new PrintStream(
                new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 1 << 16),
                false, StandardCharsets.UTF_8);
        String line;
        while ((line = in.readLine()) != null) {
            int tab = line.indexOf('\t');
            if (tab < 0) {
                out.println("error: no tab between pattern and value");
                continue;
            }
            out.println(check(unescape(line.substring(0, tab)), unescape(line.substring(tab + 1))));
        }
        out.flush();
    }

    private static String check(String pattern, String value) {
        try {
            return Pattern.compile(pattern, Pattern.CASE_INSENSITIVE).matcher(value).find() ? "match" : "nomatch";
        } catch (PatternSyntaxException e) {
            return "error: " + oneLine(e.getDescription());
        } catch (RuntimeException | StackOverflowError e) {
            return "error: " + e.getClass().getName() + " " + oneLine(String.valueOf(e.getMessage()));
        }
    }

    private static String oneLine(String text) {
        return text.replace('\n', ' ').replace('\r', ' ');
    }

    private static String unescape(String field) {
        StringBuilder text = new StringBuilder(field.length());
        for (int i = 0; i < field.length(); i++) {
            char ch = field.charAt(i);
            if (ch != '\\' || i + 1 == field.length()) {
                text.append(ch);
                continue;
            }
            char next = field.charAt(++i);
            switch (next) {
                case 't' -> text.append('\t');
                case 'n' -> text.append('\n');
                case 'r' -> text.append('\r');
                case 'u' -> {
                    text.append((char) Integer.parseInt(field.substring(i + 1, i + 5), 16));
                    i += 4;
                }
                default -> text.append(next);  // "\\"
            }
        }
        return text.toString();
    }
}
