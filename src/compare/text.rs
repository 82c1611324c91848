//! The text `loupe compare` scores when it is given none: plain English prose written for
//! loupe, about 7 KB (roughly 1,500 tokens under a 32k–256k vocabulary), enough for two
//! chunks of a few hundred tokens. A longer text (`--text`) gives steadier figures.

pub const BUILT_IN: &str = "\
The lighthouse at the end of the harbour wall was built in the spring of a year that \
nobody in the town remembers exactly. The old keeper said it was the year the river \
froze, and the baker said it was the year the school burned down, and since neither of \
those things could be found in any record, the question was left where it was. What \
everyone agreed on was that the light had never once failed. On the worst nights of \
winter, when the wind came in from the north and the waves broke over the wall, the \
beam still turned, slow and patient, every twelve seconds.

The keeper lived in a small stone house at the foot of the tower. He rose before dawn, \
climbed the hundred and twelve steps, cleaned the great lens with a soft cloth, and \
wrote a line in the log book about the weather. Most of the lines were short. Fog in \
the morning, clearing by noon. A west wind, rain after dark. Calm sea, three fishing \
boats out before six. Over forty years the book had grown into a shelf of books, and \
if you read them in order you could watch the climate of the coast change one day at \
a time: the winters a little shorter, the storms a little stronger, the birds arriving \
a week earlier than they used to.

Children from the town liked to visit him on Saturdays. He would let them look through \
the brass telescope at the ships on the horizon and explain how a sailor far out at \
sea could tell one lighthouse from another. Each light has its own character, he told \
them. One flashes twice and waits, another shows a long beam and then a short one, a \
third is red instead of white. A captain with a chart and a watch can count the seconds \
and know exactly which stretch of coast he is looking at, even on a night with no moon \
and no stars. The children would count along with the beam, and most of them got it \
wrong the first time, and all of them wanted to try again.

In the autumn the fishing fleet came home heavy and late. The harbour filled with the \
noise of engines and gulls and people shouting prices across the quay. The fish were \
sorted into boxes of ice, weighed, sold, and driven inland on lorries before the sun \
was fully up. By nine o'clock the quay was quiet again, hosed down and shining, and the \
only sign of the morning's work was the smell, which stayed until the next tide carried \
it away. The baker opened at seven and sold most of his bread to the crews, who ate it \
standing up, still in their boots, talking about the weather and the price of diesel.

There is a kind of knowledge that lives in places like this and nowhere else. It is not \
written in books, or not in books anyone outside the town would read. It is the \
knowledge of which rocks are hidden at half tide, which way the current turns when the \
wind is from the east, how long the fog will sit in the bay after a warm day in March. \
People learn it slowly, by watching and by making small mistakes that do not drown \
them, and they pass it on in the same way, a sentence at a time, on the quay or in the \
bakery or on the steps of the church after a funeral.

When the government decided that the light would be automated, there was a meeting in \
the town hall. An engineer came from the city with drawings and a projector. He \
explained that a machine would switch the lamp on at dusk and off at dawn, that a \
sensor would measure the fog and sound the horn, and that a computer in an office two \
hundred miles away would be told at once if anything went wrong. The system had been \
tested on forty lighthouses already, he said, and it had failed less often than the \
keepers had. Someone at the back asked who would write in the log book. The engineer \
said that the computer kept a log of its own, every second of every day, and that \
nothing would be lost. The room was quiet for a while after that.

The keeper did not argue. He was seventy-one, and his knees had been telling him for \
years that a hundred and twelve steps was a lot of steps. He handed over his keys on a \
grey morning in November, shook the engineer's hand, and moved into a flat above the \
post office, from whose window he could still see the tower. People said he watched it \
every night, and that he counted the seconds between the flashes out of habit, and \
that he was never once disappointed. The machine kept perfect time.

What happened to the log books is a small story of its own. For a year they sat in \
boxes in the basement of the town hall, where the damp began to curl their pages. \
Then a teacher at the school had the idea of reading them with her class. The children \
typed the entries into a spreadsheet, one line for each day, and drew charts of the \
wind and the rain and the first swallow of each spring. The charts were shown at the \
summer fair, and a scientist from the university happened to see them. She asked to \
borrow the books, and a year later a paper appeared in a journal about the changing \
climate of the northern coast, with the keeper's name in the acknowledgements and a \
photograph of his handwriting on the second page.

The keeper read the paper slowly, with a magnifying glass, at the kitchen table. He \
did not understand all of the mathematics, and he said so. But he understood the \
charts, because he had lived every point on them. He pointed to a spike in one of \
the lines and said that was the storm that took the roof off the chapel, and to a \
dip in another and said that was the summer his daughter was born, when it did not \
rain for seven weeks and the reservoir showed the ruins of the old village at its \
bottom. Every number, he said, had been a morning. It was the longest speech anyone \
had heard him make.

The tower still stands at the end of the harbour wall. Its white paint is renewed \
every few years by a crew who arrive in a van, work for three days, and leave. The \
light still turns every twelve seconds. Ships still use it, though most of them \
also carry satellite receivers that tell them their position to within a few metres, \
and a captain today is more likely to glance at a screen than to count the flashes. \
Still, on a clear night, if you stand on the quay and watch the beam sweep across the \
water, it is hard not to count. One, two, three, and so on up to twelve, and then the \
light comes round again, exactly when you expected it, as if someone were still up \
there, keeping it.

Good tools are like that. They take a task that once needed a person's whole attention \
and make it quiet and reliable, and in doing so they free that attention for \
something else. The risk is that we forget what the task taught us. A keeper who \
climbs the tower every morning learns the weather in his body. A machine that measures \
the fog learns nothing; it only measures. The answer is not to refuse the machine, \
but to keep reading its logs, to ask what they mean, and to notice when the numbers \
begin to drift. A measurement nobody looks at is only a number, but a measurement \
somebody reads every morning can become a kind of knowledge.
";
