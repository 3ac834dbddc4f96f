// Reads a zip the way XNAT's DicomZipImporter does: java.util.zip.ZipInputStream over a stream,
// local headers only (the central directory is never looked at), every entry read to its end,
// which makes Java check each entry's CRC-32 and size against its local header.
//
// Usage: java tests/ZipCheck.java FILE     (or "-" to read standard input)
// Prints "<size>\t<crc32 hex>\t<name>" per entry, then "entries=<n>"; directory entries are
// skipped, as XNAT skips them. On any ZipException/IOException (or a malformed name) it prints
// Java's message on standard error and exits with status 1.

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipInputStream;

public class ZipCheck {
    public static void main(String[] args) {
        if (args.length != 1) {
            System.err.println("usage: java ZipCheck.java FILE|-");
            System.exit(2);
        }
        PrintStream out = new PrintStream(
                new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 1 << 16),
                false, StandardCharsets.UTF_8);
        int entries = 0;
        try (InputStream raw = args[0].equals("-") ? System.in : new FileInputStream(args[0])) {
            // Like XNAT: new ZipInputStream(in), so names are read as UTF-8.
            ZipInputStream zin = new ZipInputStream(new BufferedInputStream(raw, 1 << 16));
            byte[] buffer = new byte[1 << 16];
            ZipEntry entry;
            while ((entry = zin.getNextEntry()) != null) {
                if (entry.isDirectory()) {
                    continue;
                }
                CRC32 crc = new CRC32();
                long size = 0;
                int n;
                while ((n = zin.read(buffer)) != -1) {
                    crc.update(buffer, 0, n);
                    size += n;
                }
                out.printf("%d\t%08x\t%s%n", size, crc.getValue(), entry.getName());
                entries++;
            }
            // XNAT stops here. Drain the rest (central directory) so a writer feeding our
            // standard input never sees a broken pipe.
            while (raw.read(buffer) != -1) {
                // discard
            }
        } catch (IOException | IllegalArgumentException e) {
            out.flush();
            System.err.println(e.getClass().getName() + ": " + e.getMessage());
            System.exit(1);
        }
        out.println("entries=" + entries);
        out.flush();
    }
}
